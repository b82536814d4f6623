#!/usr/bin/env python
"""Build the wheelhouse a borrowed GPU machine needs, and print the one command to run there.

    python scripts/gpu_wheelhouse.py [--out data/gpu_wheelhouse] [--budget-s 480] [--dry-run]

The machine this is for (docs/how_to/gpu.md) has Python 3 with torch + CUDA, numpy, scipy, scikit-image,
matplotlib, tensorboard and tqdm, and no package index. What lits needs beyond those (DEVICE_HAS) is downloaded here
as wheels, at the versions installed here (the versions the test suite passed with), without their dependencies
(`--no-deps`: torch and numpy are the machine's): monai, nibabel, hydra-core and what hydra-core brings (omegaconf,
antlr4-python3-runtime, PyYAML; PyYAML's binary wheel for each CPython the machine may run). The folder is small
enough to travel with the working tree; the printed command installs it offline (`pip install --no-index
--find-links`) and runs `python -m benchmarks gpu --budget-s` inside one 10-minute call.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICE_HAS = ("torch", "numpy", "scipy", "scikit-image", "matplotlib", "tensorboard", "tqdm")
# py3-none-any wheels: lits's own needs, then what they need that the machine may lack (nibabel's packaging,
# importlib-resources and typing-extensions on older Pythons; hydra-core's omegaconf and antlr4)
PURE = ("monai", "nibabel", "hydra-core", "omegaconf", "antlr4-python3-runtime", "packaging", "importlib-resources",
        "typing-extensions")  # fmt: skip
BINARY = ("PyYAML",)  # one wheel per CPython version
PYTHONS = ("3.10", "3.11", "3.12", "3.13")
PLATFORM = "manylinux2014_x86_64"


def pinned(name: str) -> str:
    """name==the version installed here (the one the tests passed with)."""
    try:
        return f"{name}=={version(name)}"
    except PackageNotFoundError:
        raise SystemExit(f"error: {name} is not installed here; pip install -e '.[dev]' first") from None


def download_commands(out: Path) -> list[list[str]]:
    """The pip commands that fill `out`: the pure-Python wheels (built here if only an sdist exists), then the
    binary ones for each CPython version."""
    pip = [sys.executable, "-m", "pip"]
    commands = [[*pip, "wheel", "--no-deps", "--wheel-dir", str(out), *(pinned(n) for n in PURE)]]
    for python in PYTHONS:
        commands.append([*pip, "download", "--no-deps", "--only-binary=:all:", "--dest", str(out), "--python-version",
                         python, "--platform", PLATFORM, *(pinned(n) for n in BINARY)])  # fmt: skip
    return commands


def device_command(out: Path, budget_s: int) -> str:
    """The one command for the GPU machine, run from the repository root with the wheelhouse carried along."""
    folder = out.resolve().relative_to(REPO) if out.resolve().is_relative_to(REPO) else out
    names = " ".join(n.lower() for n in (*PURE, *BINARY))
    return (
        f"pip install --quiet --no-index --find-links {folder} {names} && "
        f"python -m benchmarks gpu --budget-s {budget_s} --data-dir /tmp/lits-gpu-check "
        '--out "${OUT:-.}/gpu_check.md"'
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "data/gpu_wheelhouse"), help="the wheelhouse folder")
    parser.add_argument("--budget-s", type=int, default=480, help="gpu_check's budget in the printed command")
    parser.add_argument("--dry-run", action="store_true", help="print the pip commands instead of running them")
    args = parser.parse_args(argv)
    out = Path(args.out)
    for command in download_commands(out):
        print(shlex.join(command), file=sys.stderr)
        if not args.dry_run:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    if not args.dry_run:
        wheels = sorted(p.name for p in out.glob("*.whl"))
        size = sum(p.stat().st_size for p in out.glob("*.whl")) / 2**20
        print(f"{len(wheels)} wheels, {size:.1f} MiB in {out}", file=sys.stderr)
    print(device_command(out, args.budget_s))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
