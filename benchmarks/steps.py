"""The one step timer: samples/s of the model's pure training step, the yardstick the training loop is held to.

The pure step is forward, loss, backward, gradient clipping and the optimizer on one augmented batch already on the
device, repeated: what the loop would reach if loading, augmenting, bookkeeping and hooks cost nothing. It is built
by train.py's own setup (`build_run`), so both sides run the same network, loss, optimizer, AMP and memory format.
"""

from __future__ import annotations

import time


def synchronize(device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a clock read after it is honest."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_benchmark_run(cfg):
    """train.py's run for `cfg` in this process (no DDP; its hooks not started): what `pure_step_rate` times."""
    from lits.train import distributed
    from lits.train.run import build_run
    from lits.train.signals import StopRequest

    return build_run(cfg, distributed.setup(cfg.trainer.device), StopRequest())


def pure_step_rate(run, steps: int, warmup: int = 3, batch: dict | None = None) -> float:
    """samples/s of `steps` pure training steps on `batch` (None: one batch of `run`'s loader), after `warmup` untimed
    ones (5 more under torch.compile, to let recompilations settle). Nothing is read back to the host between
    steps (the loop reads its losses every LOG_EVERY steps)."""
    import torch

    from lits.core.device import autocast
    from lits.train.deep_supervision import supervised_loss
    from lits.train.loss import targets_from_labels
    from lits.train.step import prepare_batch

    image, label = prepare_batch(run, next(iter(run.loader)) if batch is None else batch)
    target, clip = targets_from_labels(label), run.cfg.trainer.grad_clip

    def step():
        with autocast(run.device, run.amp):
            logits = run.train_model(image)
        loss, _ = supervised_loss(run.loss_fn, logits, target, 0.5)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if clip:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.state.model.parameters(), clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()

    for _ in range(warmup + (5 if run.cfg.trainer.compile else 0)):
        step()
    synchronize(run.device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(run.device)
    return steps * image.shape[0] / (time.perf_counter() - started)
