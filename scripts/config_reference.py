#!/usr/bin/env python
"""Write docs/reference/options.md: every option of every config group and task, from the typed schema.

python scripts/config_reference.py [--out docs/reference/options.md]
"""

import argparse
from pathlib import Path

from lits.core.config.reference import options_markdown
from lits.core.files import write_atomic

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs/reference/options.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args()
    print(f"wrote {write_atomic(args.out, options_markdown() + chr(10))}")


if __name__ == "__main__":
    main()
