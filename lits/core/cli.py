"""What the entry points share: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import sys

from omegaconf.errors import MissingMandatoryValue

from lits.core.errors import LitsError


def run_stage(stage, cfg):
    """Call stage(cfg); a LitsError or a missing required value ends the process with one clear line."""
    try:
        return stage(cfg)
    except LitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except MissingMandatoryValue as exc:
        key = getattr(exc, "full_key", None) or str(exc).splitlines()[0]
        print(f"error: {key} is required; set it on the command line, e.g. {key}=...", file=sys.stderr)
    sys.exit(2)
