"""python -m benchmarks NAME [options]: one entry point for every benchmark (each a module here with `configure`
and `main`)."""

from __future__ import annotations

import sys

from lits.core.cli import run_subcommand

# name -> (module, one line of what it measures)
BENCHMARKS = {
    "train": ("train", "training-loop samples/s against the model's pure step, as a ratio"),
    "loader": ("loader", "our loader + batched augmentation vs MONAI dictionary transforms (samples/s, memory)"),
    "memory": ("memory", "resident memory of a training-like loader run over 10 vs 100 cases"),
    "crops": ("crops", "crops/s one loader worker reads from the cache, per-sample vs batched"),
    "infer": ("infer", "whole-CT prediction: reading, preprocessing, network, post-processing, writing"),
    "deploy": ("deploy", "predict.py with onnxruntime vs the same checkpoint with torch"),
    "metrics": ("metrics", "per-case LiTS metric time: ours (cropped) vs whole-volume medpy / MONAI"),
    "synthetic": ("synthetic", "phantom generation time: this checkout vs an earlier generator"),
    "gpu": ("gpu", "the GPU acceptance run within a time budget: a markdown report of what the machine does"),
}


def main(argv: list[str]) -> int:
    return run_subcommand("benchmarks", BENCHMARKS, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
