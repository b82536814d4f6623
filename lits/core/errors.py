"""The one exception type a user can cause; entry points print it as a single line and exit non-zero."""


class LitsError(Exception):
    """A problem with the user's input (paths, files, config, checkpoint). The message names the file and the fix."""


class Stopped(SystemExit):
    """SIGTERM / SIGINT stopped the process where it was (outside the training loop's step-by-step stop): exit code
    128 + signal. Whatever was finished is kept; `note` says where it stopped."""

    def __init__(self, signum: int, note: str = ""):
        super().__init__(128 + int(signum))
        self.signum, self.note = int(signum), note
