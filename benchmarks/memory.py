"""Resident memory of a training-like loader run (sampler + DataLoader workers + batch augmentation) over 10 vs 100
cases, each run in its own child process (printed, never asserted).

    python -m benchmarks memory [--small 10] [--large 100] [--readers pread mmap]

Memory is measured from /proc (Linux): peak PSS of the process plus its loader workers (proportional set size: pages
shared between the main process and forked workers are counted once), sampled every 20 ms, and the main process's own
peak RSS (VmHWM). Data goes to --data-dir (default data/benchmark, reused between runs).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.data import AUG, data_cfg, synthetic_cases
from benchmarks.probes import PeakMemory, machine_line, options_argv, run_child, say
from lits.core.tables import format_table


def training_like(args) -> dict:
    """prepare -> SliceIndex -> LesionSampler -> DataLoader(TrainSlices) -> BatchAugment, for a fixed number of
    batches."""
    import torch
    from torch.utils.data import DataLoader

    from lits.core.config import AugmentConfig, SamplingConfig
    from lits.data.prepare import prepare
    from lits.data.sampling import LesionSampler, SliceIndex, TrainSlices
    from lits.train.augment import BatchAugment

    torch.set_num_threads(args.threads)
    memory = PeakMemory()
    memory.start()
    _, cases = prepare(data_cfg(Path(args.root), Path(args.cache_dir)), seed=0, only=("train",), progress=False)
    cases = cases["train"][: args.num]
    sampling = SamplingConfig(samples_per_epoch=args.batches * args.batch_size)
    index = SliceIndex(cases)
    dataset = TrainSlices(index, args.crop, sampling, seed=0)
    if args.reader == "mmap":  # read crops through the long-lived memory maps instead of positional reads
        for rows in dataset._images + dataset._labels:
            rows.path = None
    sampler = LesionSampler(index.weights(sampling), sampling.samples_per_epoch, seed=0)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        persistent_workers=False,
        drop_last=True,
    )
    augment = BatchAugment(AugmentConfig(**AUG))
    generator = torch.Generator().manual_seed(0)
    seen = 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for batch in loader:
            image, label = augment(batch["image"].float(), batch["label"], generator)
            seen += image.shape[0]
    cache_mb = sum(c.image.nbytes + c.label.nbytes for c in cases) / 2**20
    return {
        "cases": len(cases),
        "slices": len(index),
        "samples": seen,
        "cache_mb": round(cache_mb, 1),
        "reader": args.reader,
        **memory.stop(),
    }


def report(args, rows: list[dict]) -> None:
    print(
        f"\nmemory: training-like loader runs ({args.epochs} epochs x {args.batches} batches of {args.batch_size} "
        f"crops {args.crop}, {args.workers} workers, batch augmentation), synthetic {args.size}x{args.size} cases"
        f"\n{machine_line()}"
    )
    shown = [
        {"reader": r["reader"], "cases": r["cases"], "slices": r["slices"], "cache MB": f"{r['cache_mb']:.0f}",
         "peak PSS MB": f"{r['peak_pss_mb']:.0f}", "sum RSS MB": f"{r['peak_rss_sum_mb']:.0f}",
         "main RSS MB": f"{r['main_peak_rss_mb']:.0f}"}
        for r in rows
    ]  # fmt: skip
    print(format_table(shown, list(shown[0])))
    for reader in args.readers:
        small, large = [r for r in rows if r["reader"] == reader]
        print(
            f"{reader}: {large['cases']} vs {small['cases']} cases: "
            f"peak PSS {large['peak_pss_mb'] - small['peak_pss_mb']:+.0f} MB, "
            f"main RSS {large['main_peak_rss_mb'] - small['main_peak_rss_mb']:+.0f} MB "
            f"(cache {large['cache_mb']:.0f} vs {small['cache_mb']:.0f} MB)"
        )


def main(args) -> None:
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) - args.workers)
    if args.num:  # child
        print(json.dumps(training_like(args)))
        return
    from lits.data.prepare import prepare_all

    data_dir = Path(args.data_dir)
    root = synthetic_cases(data_dir, args.large, args.size, tuple(args.slices))
    cache_dir = data_dir / "cache"
    prepare_all(data_cfg(root, cache_dir, workers=args.workers), progress=True)
    common = ["--root", str(root), "--cache-dir", str(cache_dir)]
    common += options_argv(args, ["batches", "epochs", "batch_size", "crop", "workers", "threads"])
    rows = []
    for reader in args.readers:
        for num in (args.small, args.large):
            say(f"running {num} cases ({reader}) ...")
            rows.append(run_child("memory", [*common, "--num", str(num), "--reader", reader]))
    report(args, rows)


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--small", type=int, default=10)
    p.add_argument("--large", type=int, default=100)
    p.add_argument("--size", type=int, default=128, help="in-plane size of the synthetic cases")
    p.add_argument("--slices", type=int, nargs=2, default=[48, 72])
    p.add_argument("--batches", type=int, default=100, help="batches per epoch")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads in the main process (default: CPUs - workers, >= 1)"
    )
    p.add_argument(
        "--readers",
        nargs="+",
        default=["pread", "mmap"],
        choices=["pread", "mmap"],
        help="pread: our positional reads; mmap: crops read through the memory maps, for comparison",
    )
    p.add_argument("--data-dir", default="data/benchmark")
    p.add_argument("--num", type=int, help=argparse.SUPPRESS)
    p.add_argument("--reader", default="pread", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
