"""The one exception type a user can cause; entry points print it as a single line and exit non-zero."""


class LitsError(Exception):
    """A problem with the user's input (paths, files, config, checkpoint). The message names the file and the fix."""
