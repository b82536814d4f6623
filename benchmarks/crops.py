"""The CPU side of a GPU run: how many training crops per second one loader worker reads from the cache (printed,
never asserted).

    python -m benchmarks crops [--cases 8] [--size 512] [--crop 256] [--batch-size 32] [--workers 2]
                               [--batches 60] [--context 0] [--repeats 3] [--cold]

On a GPU the augmentation runs on the device, so a loader worker only draws crops (TrainSlices: lesion-centred or
liver-box ROI, rows read with os.preadv from the cached .npy files) and hands over batches. Measured side by side:

* per-sample: the DataLoader's default way, one `dataset[draw]` per crop and the batch stacked by default_collate;
* batched: what train.py does, one `dataset[list of draws]` per batch (one output array, each file opened once per
  batch); the crops are bit-identical (tests/data/test_slices.py).

Each path runs in this process on one thread (what one worker does; `CPU ms/crop` from the process clock is the
robust figure on a shared machine), then in a DataLoader with --workers processes (wall-clock crops/s and the
workers' CPU time per crop). `--cold` evicts the benchmark's cache files from the page cache before every pass
(posix_fadvise DONTNEED on those files only), so crops come from the disk as on a data set larger than RAM.
The per-worker capacity is 1000 / (workers' CPU ms per crop): what a worker with a core of its own delivers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from benchmarks.data import data_cfg, synthetic_cases
from benchmarks.probes import REPO, cpu_seconds, descendants, machine_line
from lits.core.tables import format_table


def crop_dataset(args):
    """(TrainSlices over the benchmark cases, the lesion-oversampling weights, the cached cases)."""
    from lits.core.config import SamplingConfig
    from lits.data.prepare import prepare
    from lits.data.sampling import SliceIndex, TrainSlices

    root = synthetic_cases(Path(args.data_dir), args.cases, args.size, tuple(args.slices))
    _, cases = prepare(data_cfg(root, Path(args.data_dir) / "cache"), seed=0, only=("train",), progress=False)
    index = SliceIndex(cases["train"])
    sampling = SamplingConfig()
    dataset = TrainSlices(index, args.crop, sampling, seed=0, context_slices=args.context)
    return dataset, index.weights(sampling), cases["train"]


def evict(cases) -> None:
    """Drop the cached arrays of `cases` from the page cache (only these files; nothing else on the machine)."""
    for case in cases:
        for array in (case.image, case.label):
            fd = os.open(array.filename, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def draws_of(weights, count: int, epoch: int) -> list:
    from lits.data.sampling import LesionSampler

    sampler = LesionSampler(weights, count, seed=0)
    sampler.set_epoch(epoch)
    return list(sampler)


def in_process(dataset, draws: list, batch_size: int, batched: bool) -> dict:
    """One pass over `draws` in this process: crops/s of wall time and CPU ms per crop."""
    from torch.utils.data import default_collate

    batches = [draws[i : i + batch_size] for i in range(0, len(draws) - batch_size + 1, batch_size)]
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        if batched:
            dataset[batch]
        else:
            default_collate([dataset[d] for d in batch])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    crops = len(batches) * batch_size
    return {"crops_per_s": crops / wall, "cpu_ms": 1000 * cpu / crops}


def with_workers(dataset, weights, args, batched: bool, epoch: int) -> dict:
    """A DataLoader with args.workers processes (the training loader's settings): wall crops/s and the workers' CPU
    ms per crop, after args.warmup batches."""
    from torch.utils.data import BatchSampler, DataLoader

    from lits.data.sampling import LesionSampler

    sampler = LesionSampler(weights, (args.batches + args.warmup) * args.batch_size, seed=0)
    sampler.set_epoch(epoch)
    common = dict(num_workers=args.workers, persistent_workers=True, prefetch_factor=4)
    if batched:
        loader = DataLoader(dataset, batch_size=None, sampler=BatchSampler(sampler, args.batch_size, True), **common)
    else:
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, drop_last=True, **common)
    crops = 0
    for step, batch in enumerate(loader):
        if step == args.warmup:
            workers = descendants(os.getpid())
            wall, cpu, crops = time.perf_counter(), cpu_seconds(workers), 0
        crops += batch["image"].shape[0]
    wall, cpu = time.perf_counter() - wall, cpu_seconds(workers) - cpu
    del loader  # stops the persistent workers
    return {"crops_per_s": crops / wall, "cpu_ms": 1000 * cpu / crops}


def measure(args) -> list[dict]:
    """Every (path, where) row, each the median of args.repeats passes run alternately."""
    import torch

    torch.set_num_threads(1)  # what a loader worker runs with
    dataset, weights, cases = crop_dataset(args)
    runs: dict[tuple[str, str], list[dict]] = {}
    count = args.batches * args.batch_size
    in_process(dataset, draws_of(weights, 4 * args.batch_size, 99), args.batch_size, True)  # warm-up
    for repeat in range(args.repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)  # alternate: load on the machine hits both
        for batched in order:
            path = "batched" if batched else "per-sample"
            if args.cold:
                evict(cases)
            draws = draws_of(weights, count, repeat)
            runs.setdefault((path, "in process, 1 thread"), []).append(
                in_process(dataset, draws, args.batch_size, batched)
            )
        if args.workers:
            for batched in order:
                path = "batched" if batched else "per-sample"
                if args.cold:
                    evict(cases)
                runs.setdefault((path, f"DataLoader, {args.workers} workers"), []).append(
                    with_workers(dataset, weights, args, batched, repeat)
                )
    return [
        {
            "path": path,
            "where": where,
            "crops_per_s": statistics.median(r["crops_per_s"] for r in results),
            "cpu_ms": statistics.median(r["cpu_ms"] for r in results),
        }
        for (path, where), results in runs.items()
    ]


def report(args, rows: list[dict]) -> None:
    print(
        f"\ncrop reading: {args.cases} synthetic cases {args.size}x{args.size}, crop {args.crop}, context slices "
        f"{args.context}, batch {args.batch_size}, {'cold (evicted before each pass)' if args.cold else 'warm'} page "
        f"cache, median of {args.repeats} passes of {args.batches} batches\n{machine_line()}"
    )
    shown = [
        {"path": r["path"], "where": r["where"], "crops/s (wall)": f"{r['crops_per_s']:.0f}",
         "CPU ms/crop": f"{r['cpu_ms']:.3f}", "crops per CPU-s": f"{1000 / r['cpu_ms']:.0f}" if r["cpu_ms"] else "-"}
        for r in rows
    ]  # fmt: skip
    print(format_table(shown, list(shown[0])))
    by = {(r["path"], r["where"].split(",")[0]): r for r in rows}
    for where in ("in process", "DataLoader"):
        if ("batched", where) in by and ("per-sample", where) in by:
            ratio = by[("per-sample", where)]["cpu_ms"] / by[("batched", where)]["cpu_ms"]
            print(f"{where}: batched reads take {ratio:.2f}x less CPU per crop than per-sample reads")
    best = by.get(("batched", "DataLoader")) or by[("batched", "in process")]
    per_worker = 1000 / best["cpu_ms"]
    print(
        f"one loader worker with a core of its own: ~{per_worker:.0f} crops/s; a GPU step rate of 1300 crops/s needs "
        f"{max(1, -(-1300 // int(per_worker)))} worker(s) at this rate; the default 4 workers give "
        f"{4 * per_worker / 1300:.1f}x that"
    )


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", type=int, default=8, help="synthetic cases (LiTS-sized slices with --size 512)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--slices", type=int, nargs=2, default=[48, 72], help="min/max slices per case")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=60, help="timed batches per pass")
    p.add_argument("--warmup", type=int, default=4, help="DataLoader batches before the clock starts")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (0: in-process rows only)")
    p.add_argument("--context", type=int, default=0, help="data.context_slices (2.5D reads 2k+1 slices per crop)")
    p.add_argument("--repeats", type=int, default=3, help="passes per row, alternating the order; the median")
    p.add_argument("--cold", action="store_true", help="evict the cache files from the page cache before each pass")
    p.add_argument("--data-dir", default=str(REPO / "data/benchmark"))


def main(args) -> None:
    report(args, measure(args))
