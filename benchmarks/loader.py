"""Samples/s delivered (crop + augmentation, same settings) by our pipeline -- TrainSlices + LesionSampler through a
DataLoader, then BatchAugment on the batch -- vs a MONAI dictionary-transform pipeline (LoadImaged / CacheDataset,
RandCropByPosNegLabeld, RandRotated, Rand2DElasticd, intensity), on the same 512 x 512 synthetic cases; each pipeline
in its own child process, with its peak memory (printed, never asserted).

    python -m benchmarks loader [--cases 8] [--batches 60] [--workers 2] [--repeats 1]

Memory is measured from /proc (Linux): peak PSS of the process plus its loader workers, sampled every 20 ms, and the
main process's own peak RSS (VmHWM). Data goes to --data-dir (default data/benchmark, reused between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from benchmarks.data import AUG, data_cfg, synthetic_cases
from benchmarks.probes import PeakMemory, machine_line, options_argv, run_child, say, tree_cpu_s
from lits.core.tables import format_table


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


def drain(loader, warmup: int, transform) -> dict:
    """Every batch of `loader` (through `transform(batch) -> (image, label)` when given): samples/s, CPU ms per sample
    of this process and its workers, and the share of crops showing tumour, over the batches after `warmup`."""
    samples, lesion = 0, 0
    for step, batch in enumerate(loader):
        if step == warmup:
            t0, cpu0, samples, lesion = time.perf_counter(), tree_cpu_s(), 0, 0
        image, label = transform(batch) if transform else (batch["image"], batch["label"])
        samples += image.shape[0]
        lesion += int((label == 2).flatten(1).any(1).sum())
    elapsed, cpu = time.perf_counter() - t0, tree_cpu_s() - cpu0
    return {
        "cpu_ms_per_sample": 1000 * cpu / samples,
        "samples_per_s": samples / elapsed,
        "lesion_share": lesion / samples,
        "shape": list(image.shape),
    }


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

    def in_main_process(batch):
        return augment(batch["image"].float(), batch["label"], generator)

    timed = drain(loader, args.warmup, None if in_workers else in_main_process)
    return {"pipeline": args.pipeline, "cases": len(cases["train"]), "setup_s": setup, **timed, **memory.stop()}


def monai_transform(args):
    """MONAI's dictionary transforms for the same crops and augmentation as ours: cached (windowed RAS volumes and
    their fg/bg indices), then random per sample in the loader workers."""
    import numpy as np
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

    keys = ("image", "label")
    num_samples = args.monai_samples_per_volume
    return Compose(
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


def monai(args) -> dict:
    """The MONAI dictionary-transform way: CacheDataset of windowed RAS volumes (+ fg/bg indices, MONAI's recommended
    speed-up for RandCropByPosNegLabeld), per-sample random crop -> 2D -> RandRotated, Rand2DElasticd, intensity."""
    import torch
    from monai.data import CacheDataset, DataLoader, list_data_collate

    from lits.data.sources import find_lits

    memory = PeakMemory()
    memory.start()
    started = time.perf_counter()
    pairs, _ = find_lits(args.root)
    files = [{"image": str(p.image), "label": str(p.label)} for p in pairs]
    num_samples = args.monai_samples_per_volume
    transform = monai_transform(args)
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
    timed = drain(loader, args.warmup, None)
    return {"pipeline": "monai", "cases": len(files), "setup_s": setup, **timed, **memory.stop()}


PIPELINES = {"ours": ours, "ours-workers": ours, "monai": monai}


def median_row(results: list[dict]) -> dict:
    """One pipeline's repeats as one row: median speed and CPU time, the worst memory and set-up time."""
    speeds = [r["samples_per_s"] for r in results]
    worst = ("peak_pss_mb", "peak_rss_sum_mb", "main_peak_rss_mb", "setup_s")
    return {
        **results[0],
        "samples_per_s": statistics.median(speeds),
        "all_speeds": speeds,
        "cpu_ms_per_sample": statistics.median(r["cpu_ms_per_sample"] for r in results),
        **{k: max(r[k] for r in results) for k in worst},
    }


def report(args, rows: list[dict], cases: int, slices: int, prep: float) -> None:
    print(
        f"\nloader benchmark: {cases} synthetic cases {args.size}x{args.size} ({slices} slices), crop {args.crop}, "
        f"batch {args.batch_size}, {args.workers} loader workers, {args.threads} torch threads, {args.batches} timed "
        f"batches x {args.repeats} runs (median)\n{machine_line()}"
    )
    print(
        f"augmentation: rotate p={AUG['p_rotate']} +-{AUG['max_rotate_deg']} deg, elastic p={AUG['p_elastic']} sigma "
        f"{AUG['elastic_sigma']} px on {AUG['elastic_points']}x{AUG['elastic_points']} points, "
        f"intensity p={AUG['p_intensity']}"
    )
    print(f"our one-off preparation (scripts/prepare_data.py; 0 s when already cached): {prep:.1f} s\n")
    shown = [
        {"pipeline": r["pipeline"], "samples/s": f"{r['samples_per_s']:.1f}",
         "(runs)": "/".join(f"{v:.0f}" for v in r["all_speeds"]), "CPU ms/sample": f"{r['cpu_ms_per_sample']:.1f}",
         "setup s": f"{r['setup_s']:.1f}", "peak PSS MB": f"{r['peak_pss_mb']:.0f}",
         "sum RSS MB": f"{r['peak_rss_sum_mb']:.0f}", "main RSS MB": f"{r['main_peak_rss_mb']:.0f}",
         "lesion share": f"{r['lesion_share']:.2f}"}
        for r in rows
    ]  # fmt: skip
    print(format_table(shown, list(shown[0])) + "\n")
    by = {r["pipeline"]: r for r in rows}
    for name in ("ours", "ours-workers"):
        if {name, "monai"} <= set(by):
            speed = by[name]["samples_per_s"] / by["monai"]["samples_per_s"]
            cpu = by["monai"]["cpu_ms_per_sample"] / by[name]["cpu_ms_per_sample"]
            mem = by[name]["peak_pss_mb"] / by["monai"]["peak_pss_mb"]
            print(
                f"{name} / MONAI: throughput {speed:.1f}x, CPU time per sample {cpu:.1f}x less, "
                f"peak memory (PSS) {mem:.2f}x"
            )


def main(args) -> None:
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) - args.workers)
    if args.pipeline:  # child: one pipeline, one JSON line
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(PIPELINES[args.pipeline](args)))
        return
    from lits.data.prepare import prepare_all

    data_dir = Path(args.data_dir)
    root = synthetic_cases(data_dir, args.cases, args.size, tuple(args.slices))
    cache_dir = data_dir / "cache"
    t0 = time.perf_counter()
    cached, _ = prepare_all(data_cfg(root, cache_dir, workers=args.workers), progress=True)
    prep = time.perf_counter() - t0
    options = ["batches", "warmup", "batch_size", "crop", "workers", "threads", "monai_samples_per_volume"]
    common = ["--root", str(root), "--cache-dir", str(cache_dir), *options_argv(args, options)]
    runs: dict[str, list[dict]] = {name: [] for name in args.order}
    for repeat in range(args.repeats):  # alternate the order: other load on the machine hits both sides alike
        for name in args.order if repeat % 2 == 0 else args.order[::-1]:
            say(f"run {repeat + 1}/{args.repeats}: {name} ...")
            runs[name].append(run_child("loader", [*common, "--pipeline", name]))
    slices = sum(c.image.shape[0] for c in cached.values())
    report(args, [median_row(results) for results in runs.values()], len(cached), slices, prep)


def configure(p: argparse.ArgumentParser) -> None:
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
