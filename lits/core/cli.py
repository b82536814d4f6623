"""What the entry points share: the schema registered with Hydra, and user errors as one line and exit code 2.

Errors a user can cause end with one `error: ...` line on stderr: a LitsError or a missing required value from the
task, and (`prepare_hydra`) a bad override or config that Hydra refuses while composing, which Hydra itself would
print over several lines with a hint about stack traces.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from lits.core.config.store import register
from lits.core.errors import LitsError

_DETAIL_PREFIXES = (
    "full_key:",
    "reference_type",
    "object_type",
    "Set the environment variable HYDRA_FULL_ERROR",
    "To append to your config use",
)  # the last: Hydra's hint for new keys, misleading for a typo


def one_line(exc: BaseException) -> str:
    """An exception and its cause as one line: their messages' lines joined, Hydra's bookkeeping lines dropped."""
    parts = []
    for err in (exc, exc.__cause__):
        if err is None:
            continue
        for line in str(err).splitlines():
            line = line.strip()
            if line and not line.startswith(_DETAIL_PREFIXES) and line not in parts:
                parts.append(line.rstrip("."))
    if any(" not in '" in part or "not in struct" in part for part in parts):
        parts.append("check the name: --cfg job prints every key")
    return "; ".join(parts)


def prepare_hydra() -> None:
    """Register the typed schema and make Hydra's composition errors one line with exit code 2.

    Hydra reports errors through `hydra._internal.utils.run_and_report` (hydra-core 1.3, pinned in pyproject): the
    wrapper lets everything through unchanged except the errors of composing a config from files and overrides.
    """
    register()
    from hydra._internal import utils
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    original = utils.run_and_report
    if getattr(original, "__wrapped_by_lits__", False):
        return
    config_errors = (ConfigCompositionException, MissingConfigException, OverrideParseException, OmegaConfBaseException)

    def run_and_report(func):
        def composition_errors_as_one_line():
            try:
                return func()
            except config_errors as exc:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print(f"error: {one_line(exc)}", file=sys.stderr)
                sys.exit(2)

        return original(composition_errors_as_one_line)

    run_and_report.__wrapped_by_lits__ = True
    utils.run_and_report = run_and_report


def run_task(task, cfg):
    """Call task(cfg); a LitsError or a missing required value ends the process with one clear line."""
    try:
        return task(cfg)
    except LitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or str(exc).splitlines()[0]
        print(f"error: {key} is required; set it on the command line, e.g. {key}=...", file=sys.stderr)
    sys.exit(2)


class ConsoleFormatter(logging.Formatter):
    """Console log lines as `HH:MM:SS message`; warnings and errors as `HH:MM:SS WARNING: message` (the run's log file
    keeps the full record: date, logger and level)."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.levelno >= logging.WARNING:
            time_part, _, message = line.partition(" ")
            line = f"{time_part} {record.levelname}: {message}"
        return line
