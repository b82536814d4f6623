"""Training-loop throughput against the model's pure step throughput, in one run (printed, never asserted).

    python -m benchmarks train [--model unet_small] [--crop 128] [--batch-size 8] [--steps 30] [--epochs 3]
                               [--workers 2] [--threads 1] [--amp auto] [--compile]

* loop: the training task `lits.train.task.train` itself -- sampler, DataLoader workers reading crops, batched
  augmentation, forward/backward, optimizer, per-step bookkeeping, TensorBoard -- on synthetic data; its samples/s is
  the `train/samples_per_s` the loop logs (training part of each epoch, validation and checkpointing excluded),
  median over epochs after the first.
* pure step (benchmarks/steps.py): the same model, loss, optimizer, AMP, channels_last and gradient clipping repeating
  one batch that is already on the device: no data loading, no augmentation, no logging. Measured before and after
  the loop (the machine may be shared); the faster of the two counts, so noise can only make the ratio look worse.

ratio = loop / pure: the share of the model's speed the full loop keeps (target >= 97%: data loading, logging and
hooks are never the bottleneck). Synthetic data goes to --data-dir (generated once, reused).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from benchmarks.probes import REPO, machine_line, say
from benchmarks.steps import build_benchmark_run, pure_step_rate
from lits.core.tables import format_table


def benchmark_config(args, output_dir: Path):
    """The train config of the benchmark run, typed (lits.core.config.TrainConfig)."""
    from lits.core.compose import compose_config

    overrides = [
        f"experiment={args.experiment}",
        f"model={args.model}",
        f"data.crop_size={args.crop}",
        f"trainer.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.val_every={args.epochs}",
        f"data.sampling.samples_per_epoch={args.steps * args.batch_size}",
        f"trainer.amp={args.amp}",
        f"trainer.compile={str(args.compile).lower()}",
        f"trainer.device={args.device}",
        "trainer.log_images=false",
        "trainer.progress=false",
        "trainer.resume=null",
        f"data.synthetic.num_cases={args.cases}",
        f"data.synthetic.size={args.size}",
        f"paths.root_dir={REPO}",
        f"paths.data_dir={Path(args.data_dir).resolve()}",
        f"paths.output_dir={output_dir}",
    ]
    if args.threads:
        overrides.append(f"trainer.num_threads={args.threads}")
    return compose_config("train", overrides)


def pure_rate(cfg, steps: int) -> float:
    """The pure step's samples/s on a run of its own (its loader workers stopped afterwards)."""
    import gc

    run = build_benchmark_run(cfg)
    try:
        return pure_step_rate(run, steps)
    finally:
        del run
        gc.collect()


def main(args) -> None:
    import torch

    from lits.data.prepare import prepare
    from lits.train.task import train

    load = os.getloadavg()
    out = Path(tempfile.mkdtemp(prefix="lits-bench-train-"))
    try:
        cfg = benchmark_config(args, out / "run")
        if args.threads:
            torch.set_num_threads(args.threads)
        say(f"preparing synthetic data ({args.cases} cases {args.size}x{args.size}) in {args.data_dir} (once) ...")
        prepare(cfg.data, cfg.seed, only=("train", "val"), progress=False)
        say("pure step (before) ...")
        pure = [pure_rate(benchmark_config(args, out / "pure-before"), args.pure_steps)]
        say(f"training loop: {args.epochs} epochs x {args.steps} steps ...")
        train(cfg)
        history = [json.loads(line) for line in (out / "run/history.jsonl").read_text().splitlines()]
        say("pure step (after) ...")
        pure.append(pure_rate(benchmark_config(args, out / "pure-after"), args.pure_steps))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    per_epoch = [h["train/samples_per_s"] for h in history]
    loop = statistics.median(per_epoch[1:] or per_epoch)
    pure_best = max(pure)
    print(
        f"\ntrain benchmark: model {args.model}, crop {args.crop}, batch {args.batch_size}, amp {args.amp}, "
        f"compile {args.compile}, {args.workers} loader workers, torch threads {torch.get_num_threads()}, "
        f"device {args.device}\n{machine_line()}"
    )
    print(f"loop samples/s per epoch: {', '.join(f'{v:.1f}' for v in per_epoch)} (first epoch = warm-up, not counted)")
    print(
        f"pure step samples/s: before {pure[0]:.1f}, after {pure[1]:.1f}; load average at start {load[0]:.1f}, at end "
        f"{os.getloadavg()[0]:.1f} (other processes competing for the cores make both figures noisy)\n"
    )
    rows = [
        {"measure": "full loop (median, epochs 2..)", "samples/s": f"{loop:.1f}"},
        {"measure": "pure step (faster of before/after)", "samples/s": f"{pure_best:.1f}"},
    ]
    print(format_table(rows, ["measure", "samples/s"]))
    print(f"\nloop / pure step: {100 * loop / pure_best:.1f}%  (target >= 97%)")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="progressive")
    p.add_argument("--model", default="unet_small", help="configs/model/<name>")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=30, help="training steps per epoch")
    p.add_argument("--epochs", type=int, default=3, help="the first is warm-up; validation runs once, after the last")
    p.add_argument("--pure-steps", type=int, default=20, help="timed pure steps, before and after the loop")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 (default) keeps the figures stable on a shared machine, where OpenMP threads that "
        "spin-wait for busy cores make multi-threaded timings swing 10x; 0 = torch's choice",
    )
    p.add_argument("--amp", default="auto", help="auto | off | fp16 | bf16")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile (trainer.compile=true) in both measurements")
    p.add_argument("--cases", type=int, default=8, help="synthetic cases")
    p.add_argument("--size", type=int, default=256, help="in-plane size of the synthetic cases")
    p.add_argument("--data-dir", default=str(REPO / "data/benchmark"))
