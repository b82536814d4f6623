"""Estimate GPU memory and time per epoch of a training recipe from what a CPU can measure (docs/how_to/gpu.md
quotes the LiTS2017 recipe's estimate).

    python scripts/estimate_gpu.py [model=resunet34] [data=lits] [trainer.batch_size=8] [--tflops 60] [...overrides]

Measured here, exactly: parameters, FLOPs of one training step (forward + backward, torch's FlopCounterMode), bytes
of the activations autograd saves for the backward pass (saved-tensor hooks), and the CPU time of that step.
Estimated: GPU memory = weights + gradients + optimizer state (fp32) + saved activations at half precision (AMP) + a
fixed 1 GiB for the CUDA context and cuDNN workspaces; time per epoch = steps per epoch x step FLOPs / sustained
throughput (`--tflops`, default 60: roughly a third of an A100's dense fp16 peak, what convolutional U-Nets with AMP
usually sustain). These are estimates, not GPU measurements.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from lits.core.compose import compose_config
from lits.infer.networks import build_model, count_parameters
from lits.train.deep_supervision import supervised_loss
from lits.train.loss import HybridLoss, targets_from_labels
from lits.train.optim import build_optimizer

CONTEXT_BYTES = 1 << 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflops", type=float, default=60.0, help="sustained GPU throughput assumed (TFLOP/s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed CPU steps (after one warm-up step)")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. model=resunet34 data=lits")
    args = parser.parse_args()
    overrides = ["model=resunet34", "data=lits", "data.root=/unused", *args.overrides]
    cfg = compose_config("train", overrides)

    batch, size = cfg.trainer.batch_size, cfg.data.crop_size
    model = build_model(cfg.model).train().to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    loss_fn = HybridLoss(cfg.loss)
    image = torch.rand(batch, cfg.model.in_channels, size, size).contiguous(memory_format=torch.channels_last)
    label = torch.randint(0, 3, (batch, size, size))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = supervised_loss(loss_fn, model(image), targets_from_labels(label), 0.5)
        loss.backward()
        optimizer.step()

    saved = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel() * t.element_size() if not isinstance(t, torch.nn.Parameter) else 0)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()  # also the warm-up, and creates the optimizer state
    with FlopCounterMode(display=False) as counter:
        step()
    started = time.perf_counter()
    for _ in range(args.repeats):
        step()
    cpu_step = (time.perf_counter() - started) / args.repeats

    params = count_parameters(model)
    state_per_param = {"adamw": 2, "sgd": 1}[cfg.optim.name]  # Adam: two moments; SGD: momentum
    static = params * 4 * (2 + state_per_param)  # fp32 weights + gradients + optimizer state
    activations = sum(saved) / 2  # measured in fp32 on CPU; AMP keeps most of them in fp16
    memory = static + activations + CONTEXT_BYTES
    flops = counter.get_total_flops()
    steps = cfg.data.sampling.samples_per_epoch // batch
    gpu_step = flops / (args.tflops * 1e12)
    gib = 1 << 30
    print(
        f"recipe: model={cfg.model.arch} ({params / 1e6:.1f}M parameters), batch {batch} x {size}x{size}, "
        f"optim {cfg.optim.name}, {steps} steps per epoch "
        f"(data.sampling.samples_per_epoch={cfg.data.sampling.samples_per_epoch})"
    )
    print(
        f"measured: {flops / 1e9:.1f} GFLOP per training step; {sum(saved) / gib:.2f} GiB of saved activations in "
        f"fp32; CPU step {cpu_step:.2f} s ({torch.get_num_threads()} threads) -> {steps * cpu_step / 60:.0f} min per "
        "epoch on this CPU"
    )
    print(
        f"estimated GPU memory with AMP: {memory / gib:.1f} GiB (weights+grads+optimizer {static / gib:.2f}, "
        f"activations {activations / gib:.2f}, CUDA context/workspace {CONTEXT_BYTES / gib:.0f})"
    )
    print(
        f"estimated GPU time: {gpu_step * 1e3:.0f} ms per step at {args.tflops:g} TFLOP/s sustained -> "
        f"{steps * gpu_step:.0f} s per epoch of compute (data loading and validation not included)"
    )


if __name__ == "__main__":
    main()
