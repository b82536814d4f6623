#!/usr/bin/env python
"""Training-loop throughput against the model's pure step throughput, in one run (printed, never asserted).

    python scripts/benchmark.py train [--model unet_small] [--crop 128] [--batch-size 8] [--steps 40] [--epochs 3]
                                      [--workers 2] [--threads N] [--amp auto] [--compile]
    python scripts/benchmark_train.py ...          (the same, standalone)

* loop: the training task `lits.train.task.train` itself -- sampler, DataLoader workers reading crops, batched
  augmentation, forward/backward, optimizer, per-step bookkeeping, TensorBoard -- on synthetic data; its samples/s is
  the `train/samples_per_s` the loop logs (training part of each epoch, validation and checkpointing excluded),
  median over epochs after the first.
* pure step: the same model, loss, optimizer, AMP, channels_last and gradient clipping repeating one batch that is
  already on the device: no data loading, no augmentation, no logging. Measured before and after the loop (the
  machine may be shared); the faster of the two counts, so noise can only make the ratio look worse.

ratio = loop / pure: the share of the model's speed the full loop keeps (target >= 90%: data loading and logging are
never the bottleneck). Synthetic data goes to --data-dir (generated once, reused).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def compose_config(args, output_dir: Path):
    """The train config of the benchmark run, typed (lits.core.config.TrainConfig)."""
    from hydra import compose, initialize_config_dir

    from lits.core.cli import prepare_hydra
    from lits.core.config import TrainConfig, typed

    prepare_hydra()
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
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return typed(TrainConfig, compose("train", overrides=overrides))


def pure_step(cfg, batch, steps: int, warmup: int = 3) -> float:
    """samples/s of forward + loss + backward + clip + optimizer step on one batch already on the device."""
    import torch

    from lits.core.device import autocast, resolve_amp, resolve_device
    from lits.infer.networks import build_model
    from lits.train.loss import HybridLoss, targets_from_labels

    device = resolve_device(cfg.trainer.device)
    amp = resolve_amp(cfg.trainer.amp, device)
    memory_format = torch.channels_last if cfg.trainer.channels_last else torch.contiguous_format
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device, memory_format=memory_format).train()
    step_model = torch.compile(model, mode=cfg.trainer.compile_mode or None) if cfg.trainer.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    loss_fn = HybridLoss(cfg.loss)
    image = batch[0].to(device).contiguous(memory_format=memory_format)
    target = targets_from_labels(batch[1].to(device))

    def step():
        with autocast(device, amp):
            logits = step_model(image)
        loss, parts = loss_fn(logits, target, 0.5)
        torch.stack([loss.detach(), parts["bce"], parts["dice"]]).tolist()  # the loop's one host sync per step
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.trainer.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.trainer.grad_clip)
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup + (5 if cfg.trainer.compile else 0)):  # compile: let recompilations settle
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * image.shape[0] / (time.perf_counter() - t0)


def one_batch(cfg):
    """One augmented training batch from the real pipeline (prepare -> sampler -> crops -> augmentation)."""
    import torch

    from lits.data.prepare import prepare
    from lits.data.sampling import LesionSampler, SliceIndex, TrainSlices
    from lits.train.augment import BatchAugment

    _, cases = prepare(cfg.data, cfg.seed, only=("train",), progress=False)
    sampling = cfg.data.sampling
    index = SliceIndex(cases["train"])
    sampler = LesionSampler(index.weights(sampling), sampling.samples_per_epoch, seed=cfg.seed)
    dataset = TrainSlices(index, cfg.data.crop_size, sampling, seed=cfg.seed, context_slices=cfg.data.context_slices)
    items = [dataset[i] for _, i in zip(range(cfg.trainer.batch_size), sampler)]
    image = torch.stack([it["image"] for it in items]).float()
    label = torch.stack([it["label"] for it in items])
    return BatchAugment(cfg.augment)(image, label, torch.Generator().manual_seed(0))


def train_benchmark(args) -> None:
    import torch

    from lits.data.prepare import prepare
    from lits.train.task import train

    load = os.getloadavg()
    out = Path(tempfile.mkdtemp(prefix="lits-bench-train-"))
    try:
        cfg = compose_config(args, out / "run")
        if args.threads:
            torch.set_num_threads(args.threads)
        print(
            f"preparing synthetic data ({args.cases} cases {args.size}x{args.size}) in {args.data_dir} (once) ...",
            file=sys.stderr,
            flush=True,
        )
        prepare(cfg.data, cfg.seed, only=("train", "val"), progress=False)
        batch = one_batch(cfg)
        print("pure step (before) ...", file=sys.stderr, flush=True)
        pure = [pure_step(cfg, batch, args.pure_steps)]
        print(f"training loop: {args.epochs} epochs x {args.steps} steps ...", file=sys.stderr, flush=True)
        train(cfg)
        history = [json.loads(line) for line in (out / "run/history.jsonl").read_text().splitlines()]
        print("pure step (after) ...", file=sys.stderr, flush=True)
        pure.append(pure_step(cfg, batch, args.pure_steps))
    finally:
        shutil.rmtree(out, ignore_errors=True)
    per_epoch = [h["train/samples_per_s"] for h in history]
    loop = statistics.median(per_epoch[1:] or per_epoch)
    pure_best = max(pure)
    print(
        f"\ntrain benchmark: model {args.model}, crop {args.crop}, batch {args.batch_size}, amp {args.amp}, "
        f"compile {args.compile}, {args.workers} loader workers, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, device {args.device}"
    )
    print(f"loop samples/s per epoch: {', '.join(f'{v:.1f}' for v in per_epoch)} (first epoch = warm-up, not counted)")
    print(
        f"pure step samples/s: before {pure[0]:.1f}, after {pure[1]:.1f}; load average at start {load[0]:.1f}, at end "
        f"{os.getloadavg()[0]:.1f} (other processes competing for the cores make both figures noisy)\n"
    )
    header = f"{'measure':<34} {'samples/s':>10}"
    print(header)
    print("-" * len(header))
    print(f"{'full loop (median, epochs 2..)':<34} {loop:>10.1f}")
    print(f"{'pure step (faster of before/after)':<34} {pure_best:>10.1f}")
    print(f"\nloop / pure step: {100 * loop / pure_best:.1f}%  (target >= 90%)")


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    train_benchmark(parser.parse_args())
