"""Training-loop throughput against the model's pure step throughput, interleaved in one run (printed, never
asserted).

    python -m benchmarks train [--model unet_small] [--crop 128] [--batch-size 8] [--steps 40] [--epochs 4]
                               [--block 4] [--workers 2] [--threads 1] [--amp auto] [--compile]

* loop: train.py's own run and loop (`lits.train.fit.fit` with every hook of a real run) -- sampler, DataLoader
  workers reading crops, batched augmentation, forward/backward, optimizer, per-step bookkeeping, TensorBoard,
  checkpoints -- on synthetic data, timed from step to step (validation and checkpointing between epochs excluded,
  as in the `train/samples_per_s` the loop logs).
* pure step (benchmarks/steps.py): the same run's model, loss, optimizer, AMP, channels_last and gradient clipping
  repeating one augmented batch already on the device: no data loading, no augmentation, no logging.

The two alternate inside the run: every --block loop steps, a hook times --block pure steps. On a shared machine the
speed of either drifts by 10% within a minute, so measuring them minutes apart compares the machine's moods, not
the loop; blocks a second apart see the same machine. ratio = loop samples/s / pure samples/s over all blocks of
epochs 2.. (the first warms up): the share of the model's speed the full loop keeps (target >= 97%: data loading,
augmentation, logging and hooks are never the bottleneck). Synthetic data goes to --data-dir (generated once).
"""

from __future__ import annotations

import argparse
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


def measure(cfg, block: int) -> list[dict]:
    """Per epoch of one run: {"loop": (samples, seconds), "pure": (samples, seconds), "pairs": [loop / pure of each
    block]}. train.py's run and hooks, plus one that, after every `block` loop steps, times `block` pure steps on one
    batch drawn before training (they move the model and optimizer too; a benchmark's run is thrown away)."""
    import gc
    import time

    from lits.train.fit import fit
    from lits.train.hooks import Hook, Hooks
    from lits.train.loader import close_loader

    epochs = []

    class Interleave(Hook):
        def before_train(self, run) -> None:
            self.batch = next(iter(run.loader))
            pure_step_rate(run, block, batch=self.batch)  # warms the pure step's path up

        def before_epoch(self, run, alpha: float) -> None:
            epochs.append({"loop": (0, 0.0), "pure": (0, 0.0), "pairs": []})
            self.steps, self.mark = 0, time.perf_counter()

        def after_step(self, run, result) -> None:
            self.steps += 1
            if self.steps % block:
                return
            record, samples = epochs[-1], block * run.cfg.trainer.batch_size
            loop_s = time.perf_counter() - self.mark
            pure_s = samples / pure_step_rate(run, block, warmup=0, batch=self.batch)
            for key, seconds in (("loop", loop_s), ("pure", pure_s)):
                record[key] = (record[key][0] + samples, record[key][1] + seconds)
            record["pairs"].append(pure_s / loop_s)
            self.mark = time.perf_counter()

    run = build_benchmark_run(cfg)
    run.hooks = Hooks([*run.hooks.hooks, Interleave()])
    try:
        fit(run)
    finally:
        close_loader(run.loader)
    del run
    gc.collect()
    return epochs


def main(args) -> None:
    import torch

    from lits.data.prepare import prepare

    load = os.getloadavg()
    out = Path(tempfile.mkdtemp(prefix="lits-bench-train-"))
    try:
        cfg = benchmark_config(args, out / "run")
        if args.threads:
            torch.set_num_threads(args.threads)
        say(f"preparing synthetic data ({args.cases} cases {args.size}x{args.size}) in {args.data_dir} (once) ...")
        prepare(cfg.data, cfg.seed, only=("train", "val"), progress=False)
        say(f"training loop: {args.epochs} epochs x {args.steps} steps, {args.block} pure steps after every "
            f"{args.block} ...")  # fmt: skip
        epochs = measure(cfg, args.block)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(
        f"\ntrain benchmark: model {args.model}, crop {args.crop}, batch {args.batch_size}, amp {args.amp}, "
        f"compile {args.compile}, {args.workers} loader workers, torch threads {torch.get_num_threads()}, "
        f"device {args.device}, blocks of {args.block} steps\n{machine_line()}; load average at start {load[0]:.1f}\n"
    )
    print(format_table([epoch_row(i, e) for i, e in enumerate(epochs, start=1)], list(epoch_row(1, epochs[0]))))
    counted = epochs[1:] or epochs
    loop, pure = (sum(e[key][0] for e in counted) / sum(e[key][1] for e in counted) for key in ("loop", "pure"))
    pairs = sorted(p for e in counted for p in e["pairs"])
    quartiles = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else pairs * 3
    print(
        f"\nloop / pure step: {100 * loop / pure:.1f}% over epochs {2 if epochs[1:] else 1}..{len(epochs)} (loop "
        f"{loop:.1f}, pure {pure:.1f} samples/s; per block pair median {100 * quartiles[1]:.1f}%, quartiles "
        f"{100 * quartiles[0]:.1f}-{100 * quartiles[2]:.1f}%; target >= 97%)"
    )


def epoch_row(number: int, epoch: dict) -> dict:
    """One epoch's line of the printed table (`measure`'s record of it)."""
    loop, pure = (epoch[key][0] / epoch[key][1] if epoch[key][1] else float("nan") for key in ("loop", "pure"))
    return {
        "epoch": f"{number}{' (warm-up)' if number == 1 else ''}",
        "loop samples/s": f"{loop:.1f}",
        "pure step samples/s": f"{pure:.1f}",
        "loop / pure": f"{100 * loop / pure:.1f}%",
        "blocks": str(len(epoch["pairs"])),
    }


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="progressive")
    p.add_argument("--model", default="unet_small", help="configs/model/<name>")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=40, help="training steps per epoch")
    p.add_argument("--epochs", type=int, default=4, help="the first is warm-up; validation runs once, after the last")
    p.add_argument("--block", type=int, default=4, help="loop steps, then as many pure steps, in turn")
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
