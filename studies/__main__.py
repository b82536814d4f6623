"""python -m studies NAME [options]: one entry point for the Python studies (each a module here with `configure`
and `main`)."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one line of what it studies)
STUDIES = {
    "recipe": ("recipe", "training ingredients x seeds at a fixed wall-clock budget, paired against the default"),
    "phantom": ("phantom_stats", "the phantom's lesion statistics (or any LiTS folder's), beside the real ones"),
}


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m studies",
        description=importlib.import_module("studies").__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="study", required=True, metavar="NAME")
    for name, (module_name, summary) in STUDIES.items():
        module = importlib.import_module(f"studies.{module_name}")
        p = sub.add_parser(
            name, help=summary, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.configure(p)
        p.set_defaults(main=module.main)
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.main(args) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
