"""python -m studies NAME [options]: one entry point for the Python studies (each a module here with `configure`
and `main`)."""

from __future__ import annotations

import sys

from lits.core.cli import run_subcommand

# name -> (module, one line of what it studies)
STUDIES = {
    "recipe": ("recipe", "training ingredients x seeds at a fixed wall-clock budget, paired against the default"),
    "phantom": ("phantom_stats", "the phantom's lesion statistics (or any LiTS folder's), beside the real ones"),
    "transfer": ("transfer", "does post-processing move lesion finding on the phantom as on a real CT"),
}


def main(argv: list[str]) -> int:
    return run_subcommand("studies", STUDIES, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
