#!/usr/bin/env python
"""Benchmarks that print figures (never asserted anywhere). Subcommands:

  loader   samples/s delivered (crop + augmentation, same settings) by our pipeline -- TrainSlices + LesionSampler
           through a DataLoader, then BatchAugment on the batch -- vs a MONAI dictionary-transform pipeline
           (LoadImaged / CacheDataset, RandCropByPosNegLabeld, RandRotated, Rand2DElasticd, intensity), on the same
           512 x 512 synthetic cases; each pipeline in its own subprocess, with its peak memory.
  train    full training-loop samples/s vs the model's pure step (same batch on repeat), printed as a ratio
  crops    the CPU side of a GPU run: crops/s and CPU ms per crop one loader worker reads from the cache, per-sample
           vs batched reads (scripts/benchmark_crops.py)
  infer    whole-CT prediction split into reading, preprocessing, network, post-processing and writing, with peak
           memory (scripts/benchmark_infer.py)
  memory   resident memory of a training-like loader run (sampler + DataLoader workers + batch augmentation) over
           10 vs 100 cases, each run in its own subprocess.

    python scripts/benchmark.py loader [--cases 8] [--batches 60] [--workers 2]
    python scripts/benchmark.py memory [--small 10] [--large 100]
    python scripts/benchmark.py train [--model unet_small] [--crop 128] [--batch-size 8] [--threads 1] [--compile]
    python scripts/benchmark.py crops [--cases 8] [--crop 256] [--batch-size 32] [--workers 2] [--cold]
    python scripts/benchmark.py infer [--slices 300] [--model unet_small] [--threads 2]

Memory is measured from /proc (Linux): peak PSS of the process plus its loader workers (proportional set size:
pages shared between the main process and forked workers are counted once), sampled every 20 ms, and the
main process's own peak RSS (VmHWM). Data goes to --data-dir (default data/benchmark, reused between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

SUBCOMMANDS: dict[str, tuple] = {}


def subcommand(name: str, help: str):
    """Register `fn(args)` as a subcommand; `fn.configure(parser)` adds its options."""

    def register(fn):
        SUBCOMMANDS[name] = (fn, help)
        return fn

    return register


# ---------------------------------------------------------------------------------------------- memory probes
def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return _status_kb(pid, "VmRSS")


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = []
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
        found += children
        todo += children
    return found


def tree_cpu_s() -> float:
    """CPU seconds (user + system) used so far by this process and its live descendants (the loader workers)."""
    total = 0
    for pid in [os.getpid(), *_descendants(os.getpid())]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


class PeakMemory(threading.Thread):
    """Samples PSS and RSS of this process tree every `interval` s; `.peak_pss_mb`, `.peak_rss_sum_mb`."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        self.interval, self.peak_pss_mb, self.peak_rss_sum_mb = interval, 0.0, 0.0
        self._halt = threading.Event()

    def sample(self) -> None:
        pids = [os.getpid(), *_descendants(os.getpid())]
        self.peak_pss_mb = max(self.peak_pss_mb, sum(_pss_kb(p) for p in pids) / 1024)
        self.peak_rss_sum_mb = max(self.peak_rss_sum_mb, sum(_status_kb(p, "VmRSS") for p in pids) / 1024)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> dict:
        self._halt.set()
        self.join()
        self.sample()
        return {
            "peak_pss_mb": round(self.peak_pss_mb, 1),
            "peak_rss_sum_mb": round(self.peak_rss_sum_mb, 1),
            "main_peak_rss_mb": round(_status_kb(os.getpid(), "VmHWM") / 1024, 1),
        }


# ---------------------------------------------------------------------------------------------- data
def synthetic_cases(data_dir: Path, num_cases: int, size: int, num_slices: tuple[int, int]) -> Path:
    """The synthetic LiTS-format data set (generated once, reused)."""
    from lits.data.synthetic import SyntheticParams, generate_dataset

    root = data_dir / f"synthetic-{num_cases}x{size}-z{num_slices[0]}-{num_slices[1]}"
    if not root.exists():
        print(f"generating {num_cases} synthetic {size}x{size} cases into {root} (once)", file=sys.stderr, flush=True)
        generate_dataset(root, num_cases=num_cases, seed=0, params=SyntheticParams(size=size, num_slices=num_slices))
    return root


def data_cfg(root: Path, cache_dir: Path, workers: int = 2):
    """The LiTS-layout data config of the benchmark data: every case in the training split, the rest as the schema's
    defaults (HU window [-200, 250], liver z-range + 20 mm)."""
    from lits.core.config import DataConfig

    return DataConfig(
        root=str(root), cache_dir=str(cache_dir), prepare_workers=workers, split={"val": 0.0, "test": 0.0}
    )


def run_child(argv: list[str]) -> dict:
    """Run `benchmark.py <argv>` in a fresh interpreter; it prints one JSON line last."""
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stderr[-4000:])
        raise SystemExit(f"benchmark child {' '.join(argv)} failed (exit {result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- pipelines
AUG = {
    "p_rotate": 0.5,
    "max_rotate_deg": 15.0,
    "p_elastic": 0.3,
    "elastic_sigma": 25.0,
    "elastic_points": 3,
    "p_intensity": 0.5,
    "intensity_scale": (0.9, 1.1),
    "intensity_shift": (-0.1, 0.1),
}


class AugmentInWorkers:
    """collate_fn that stacks the batch and runs BatchAugment on it inside the loader worker (CPU-only runs)."""

    def __init__(self, cfg: dict, seed: int):
        self.cfg, self.seed, self.augment, self.generator = cfg, seed, None, None

    def __call__(self, items):
        import torch
        from torch.utils.data import default_collate

        from lits.core.config import AugmentConfig
        from lits.train.augment import BatchAugment

        if self.augment is None:
            info = torch.utils.data.get_worker_info()
            self.augment = BatchAugment(AugmentConfig(**self.cfg))
            self.generator = torch.Generator().manual_seed(self.seed * 1000 + (info.id if info else 0))
        batch = default_collate(items)
        batch["image"], batch["label"] = self.augment(batch["image"].float(), batch["label"], self.generator)
        return batch


def ours(args) -> dict:
    """TrainSlices + LesionSampler in a DataLoader, BatchAugment on each batch: in the main process as train.py does
    (on the CPU here, like a CPU run; on CUDA it runs on the GPU), or (ours-workers) inside the loader workers."""
    import torch
    from torch.utils.data import DataLoader

    from lits.core.config import AugmentConfig, SamplingConfig
    from lits.data.prepare import prepare
    from lits.data.sampling import LesionSampler, SliceIndex, TrainSlices
    from lits.train.augment import BatchAugment

    in_workers = args.pipeline == "ours-workers"
    memory = PeakMemory()
    memory.start()
    started = time.perf_counter()
    _, cases = prepare(data_cfg(Path(args.root), Path(args.cache_dir)), seed=0, only=("train",), progress=False)
    sampling = SamplingConfig(samples_per_epoch=(args.batches + args.warmup) * args.batch_size)
    index = SliceIndex(cases["train"])
    sampler = LesionSampler(index.weights(sampling), sampling.samples_per_epoch, seed=0)
    dataset = TrainSlices(index, args.crop, sampling, seed=0)
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        drop_last=True,
        collate_fn=AugmentInWorkers(AUG, 0) if in_workers else None,
    )
    augment = BatchAugment(AugmentConfig(**AUG))
    generator = torch.Generator().manual_seed(0)
    setup = time.perf_counter() - started
    samples, lesion = 0, 0
    for step, batch in enumerate(loader):
        if step == args.warmup:
            t0, cpu0, samples, lesion = time.perf_counter(), tree_cpu_s(), 0, 0
        if in_workers:
            image, label = batch["image"], batch["label"]
        else:
            image, label = augment(batch["image"].float(), batch["label"], generator)
        samples += image.shape[0]
        lesion += int((label == 2).flatten(1).any(1).sum())
    elapsed, cpu = time.perf_counter() - t0, tree_cpu_s() - cpu0
    return {
        "pipeline": args.pipeline,
        "cpu_ms_per_sample": 1000 * cpu / samples,
        "cases": len(cases["train"]),
        "samples_per_s": samples / elapsed,
        "setup_s": setup,
        "lesion_share": lesion / samples,
        "shape": list(image.shape),
        **memory.stop(),
    }


def monai(args) -> dict:
    """The MONAI dictionary-transform way: CacheDataset of windowed RAS volumes (+ fg/bg indices, MONAI's recommended
    speed-up for RandCropByPosNegLabeld), per-sample random crop -> 2D -> RandRotated, Rand2DElasticd, intensity."""
    import numpy as np
    import torch
    from monai.data import CacheDataset, DataLoader, list_data_collate
    from monai.transforms import (
        CastToTyped,
        Compose,
        EnsureChannelFirstd,
        EnsureTyped,
        FgBgToIndicesd,
        LoadImaged,
        Orientationd,
        Rand2DElasticd,
        RandCropByPosNegLabeld,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
        ScaleIntensityRanged,
        SqueezeDimd,
    )

    from lits.data.sources import find_lits

    memory = PeakMemory()
    memory.start()
    started = time.perf_counter()
    pairs, _ = find_lits(args.root)
    files = [{"image": str(p.image), "label": str(p.label)} for p in pairs]
    keys = ("image", "label")
    num_samples = args.monai_samples_per_volume
    transform = Compose(
        [
            LoadImaged(keys),
            EnsureChannelFirstd(keys),
            Orientationd(keys, axcodes="RAS"),
            ScaleIntensityRanged("image", a_min=-200, a_max=250, b_min=0.0, b_max=1.0, clip=True),
            CastToTyped("label", dtype=np.uint8),
            FgBgToIndicesd("label"),  # cached with the volumes: crops need not scan the label every time
            # ---- random, per sample, in the loader workers
            RandCropByPosNegLabeld(
                keys,
                "label",
                spatial_size=(args.crop, args.crop, 1),
                pos=1.0,
                neg=1.0,
                num_samples=num_samples,
                fg_indices_key="label_fg_indices",
                bg_indices_key="label_bg_indices",
            ),
            SqueezeDimd(keys, dim=-1),
            RandRotated(
                keys,
                range_x=np.deg2rad(AUG["max_rotate_deg"]),
                prob=AUG["p_rotate"],
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),
            ),
            Rand2DElasticd(
                keys,
                spacing=(args.crop // (AUG["elastic_points"] - 1),) * 2,
                magnitude_range=(AUG["elastic_sigma"],) * 2,
                prob=AUG["p_elastic"],
                mode=("bilinear", "nearest"),
                padding_mode=("border", "zeros"),
            ),
            RandScaleIntensityd("image", factors=0.1, prob=AUG["p_intensity"]),
            RandShiftIntensityd("image", offsets=0.1, prob=AUG["p_intensity"]),
            EnsureTyped(keys, track_meta=False),
        ]
    )
    # copy_cache=False: MONAI's fast setting (the default deep-copies the cached volume for every item); safe here
    # because the first random transform crops, so nothing writes into the cache
    dataset = CacheDataset(files, transform, cache_rate=1.0, num_workers=args.workers, progress=False, copy_cache=False)
    per_batch = max(1, args.batch_size // num_samples)
    total = (args.batches + args.warmup) * per_batch
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=total)
    loader = DataLoader(
        dataset,
        batch_size=per_batch,
        sampler=sampler,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        collate_fn=list_data_collate,
    )
    setup = time.perf_counter() - started
    samples, lesion = 0, 0
    for step, batch in enumerate(loader):
        if step == args.warmup:
            t0, cpu0, samples, lesion = time.perf_counter(), tree_cpu_s(), 0, 0
        samples += batch["image"].shape[0]
        lesion += int((batch["label"] == 2).flatten(1).any(1).sum())
    elapsed, cpu = time.perf_counter() - t0, tree_cpu_s() - cpu0
    return {
        "pipeline": "monai",
        "cpu_ms_per_sample": 1000 * cpu / samples,
        "cases": len(files),
        "samples_per_s": samples / elapsed,
        "setup_s": setup,
        "lesion_share": lesion / samples,
        "shape": list(batch["image"].shape),
        **memory.stop(),
    }


@subcommand("loader", "our loader + batched augmentation vs MONAI dictionary transforms (samples/s, peak memory)")
def loader_benchmark(args) -> None:
    if args.pipeline:  # child: one pipeline, one JSON line
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps({"ours": ours, "ours-workers": ours, "monai": monai}[args.pipeline](args)))
        return
    data_dir = Path(args.data_dir)
    root = synthetic_cases(data_dir, args.cases, args.size, tuple(args.slices))
    cache_dir = data_dir / "cache"
    from lits.data.prepare import prepare_all

    t0 = time.perf_counter()
    cached, _ = prepare_all(data_cfg(root, cache_dir, workers=args.workers), progress=True)
    prep = time.perf_counter() - t0
    slices = sum(c.image.shape[0] for c in cached.values())
    common = [
        "loader",
        "--root",
        str(root),
        "--cache-dir",
        str(cache_dir),
        "--batches",
        str(args.batches),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
        "--crop",
        str(args.crop),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--monai-samples-per-volume",
        str(args.monai_samples_per_volume),
    ]
    runs: dict[str, list[dict]] = {name: [] for name in args.order}
    for repeat in range(args.repeats):  # alternate the order: other load on the machine hits both sides alike
        for name in args.order if repeat % 2 == 0 else args.order[::-1]:
            print(f"run {repeat + 1}/{args.repeats}: {name} ...", file=sys.stderr, flush=True)
            runs[name].append(run_child([*common, "--pipeline", name]))
    rows = []
    for results in runs.values():
        speeds = [r["samples_per_s"] for r in results]
        rows.append(
            {
                **results[0],
                "samples_per_s": statistics.median(speeds),
                "all_speeds": speeds,
                "cpu_ms_per_sample": statistics.median(r["cpu_ms_per_sample"] for r in results),
                **{
                    k: max(r[k] for r in results)
                    for k in ("peak_pss_mb", "peak_rss_sum_mb", "main_peak_rss_mb", "setup_s")
                },
            }
        )
    by = {r["pipeline"]: r for r in rows}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nloader benchmark: {len(cached)} synthetic cases {args.size}x{args.size} ({slices} slices), "
        f"crop {args.crop}, batch {args.batch_size}, {args.workers} loader workers, {args.threads} torch threads, "
        f"{os.cpu_count()} CPUs, load average {load:.1f}, {args.batches} timed batches x {args.repeats} runs (median)"
    )
    print(
        f"augmentation: rotate p={AUG['p_rotate']} +-{AUG['max_rotate_deg']} deg, elastic p={AUG['p_elastic']} sigma "
        f"{AUG['elastic_sigma']} px on {AUG['elastic_points']}x{AUG['elastic_points']} points, "
        f"intensity p={AUG['p_intensity']}"
    )
    print(f"our one-off preparation (scripts/prepare_data.py; 0 s when already cached): {prep:.1f} s\n")
    header = (
        f"{'pipeline':<12} {'samples/s':>10} {'(runs)':>16} {'CPU ms/sample':>14} {'setup s':>8} {'peak PSS MB':>12} "
        f"{'sum RSS MB':>11} {'main RSS MB':>12} {'lesion share':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        every = "/".join(f"{v:.0f}" for v in r["all_speeds"])
        print(
            f"{r['pipeline']:<12} {r['samples_per_s']:>10.1f} {every:>16} {r['cpu_ms_per_sample']:>14.1f} "
            f"{r['setup_s']:>8.1f} {r['peak_pss_mb']:>12.0f} {r['peak_rss_sum_mb']:>11.0f} "
            f"{r['main_peak_rss_mb']:>12.0f} {r['lesion_share']:>13.2f}"
        )
    print()
    for name in ("ours", "ours-workers"):
        if {name, "monai"} <= set(by):
            speed = by[name]["samples_per_s"] / by["monai"]["samples_per_s"]
            cpu = by["monai"]["cpu_ms_per_sample"] / by[name]["cpu_ms_per_sample"]
            mem = by[name]["peak_pss_mb"] / by["monai"]["peak_pss_mb"]
            print(
                f"{name} / MONAI: throughput {speed:.1f}x, CPU time per sample {cpu:.1f}x less, "
                f"peak memory (PSS) {mem:.2f}x"
            )


def _loader_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", type=int, default=8, help="synthetic 512x512 cases")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--slices", type=int, nargs=2, default=[48, 72], help="min/max slices per case")
    p.add_argument("--batches", type=int, default=60, help="timed batches per pipeline")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers (and CacheDataset / preparation processes)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in the main process (default: CPUs - workers, at least 1: no oversubscription)",
    )
    p.add_argument("--monai-samples-per-volume", type=int, default=4, help="RandCropByPosNegLabeld num_samples")
    p.add_argument(
        "--order",
        nargs="+",
        default=["ours", "ours-workers", "monai"],
        choices=["ours", "ours-workers", "monai"],
        help="ours: augmentation in the main process (train.py); ours-workers: inside the loader workers",
    )
    p.add_argument(
        "--repeats", type=int, default=1, help="runs per pipeline, alternating the order; the median is shown"
    )
    p.add_argument("--data-dir", default="data/benchmark")
    p.add_argument("--pipeline", choices=["ours", "ours-workers", "monai"], help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)


loader_benchmark.configure = _loader_options


# ---------------------------------------------------------------------------------------------- memory
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


@subcommand("memory", "resident memory of a training-like loader run over 10 vs 100 cases")
def memory_benchmark(args) -> None:
    if args.num:  # child
        print(json.dumps(training_like(args)))
        return
    data_dir = Path(args.data_dir)
    root = synthetic_cases(data_dir, args.large, args.size, tuple(args.slices))
    cache_dir = data_dir / "cache"
    from lits.data.prepare import prepare_all

    prepare_all(data_cfg(root, cache_dir, workers=args.workers), progress=True)
    common = [
        "memory",
        "--root",
        str(root),
        "--cache-dir",
        str(cache_dir),
        "--batches",
        str(args.batches),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--crop",
        str(args.crop),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
    ]
    rows = []
    for reader in args.readers:
        for num in (args.small, args.large):
            print(f"running {num} cases ({reader}) ...", file=sys.stderr, flush=True)
            rows.append(run_child([*common, "--num", str(num), "--reader", reader]))
    print(
        f"\nmemory: training-like loader runs ({args.epochs} epochs x {args.batches} batches of {args.batch_size} "
        f"crops {args.crop}, {args.workers} workers, batch augmentation), synthetic {args.size}x{args.size} cases"
    )
    header = (
        f"{'reader':<6} {'cases':>5} {'slices':>7} {'cache MB':>9} {'peak PSS MB':>12} {'sum RSS MB':>11} "
        f"{'main RSS MB':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['reader']:<6} {r['cases']:>5} {r['slices']:>7} {r['cache_mb']:>9.0f} {r['peak_pss_mb']:>12.0f} "
            f"{r['peak_rss_sum_mb']:>11.0f} {r['main_peak_rss_mb']:>12.0f}"
        )
    for reader in args.readers:
        small, large = [r for r in rows if r["reader"] == reader]
        print(
            f"{reader}: {large['cases']} vs {small['cases']} cases: "
            f"peak PSS {large['peak_pss_mb'] - small['peak_pss_mb']:+.0f} MB, "
            f"main RSS {large['main_peak_rss_mb'] - small['main_peak_rss_mb']:+.0f} MB "
            f"(cache {large['cache_mb']:.0f} vs {small['cache_mb']:.0f} MB)"
        )


def _memory_options(p: argparse.ArgumentParser) -> None:
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


memory_benchmark.configure = _memory_options


# ---------------------------------------------------------------------------------------------- train
# subcommands that are scripts of their own, run as they are: their options, their output, their exit code
DELEGATED = {
    "train": ("benchmark_train.py", "full training loop samples/s vs the model's pure step (same batch on repeat)"),
    "crops": ("benchmark_crops.py", "crops/s one loader worker reads from the cache, per-sample vs batched"),
    "infer": ("benchmark_infer.py", "whole-CT prediction: reading, preprocessing, network, post-processing, writing"),
}


def main(argv: list[str]) -> None:
    if argv[:1] and argv[0] in DELEGATED:
        script = Path(__file__).resolve().with_name(DELEGATED[argv[0]][0])
        sys.exit(subprocess.call([sys.executable, str(script), *argv[1:]]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (fn, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=(fn.__doc__ or help_text))
        fn.configure(p)
        p.set_defaults(run=fn)
    for name, (_, help_text) in DELEGATED.items():  # listed here; main() hands them to their scripts
        sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    if getattr(args, "threads", 0) is None:
        args.threads = max(1, (os.cpu_count() or 1) - args.workers)
    args.run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
