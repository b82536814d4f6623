"""One optimisation step: device copy, augmentation, normalisation, AMP forward, loss, and a guarded update.

A non-finite loss skips the step on every rank (no backward, no optimizer step, BatchNorm statistics restored) and is
counted; `trainer.max_bad_steps` in a row abort. SIGTERM/SIGINT and the time budget are read here too: the three
flags travel in one tiny all-reduce, so every rank skips, stops or ends the epoch at the same step.

fp16 (trainer.amp=fp16, CUDA or CPU): the loss is scaled before backward, the gradients are unscaled before clipping,
and an Inf/NaN in the *gradients* (an fp16 overflow of the scaled backward pass) makes the GradScaler skip the
optimizer step and halve its scale. That is the scaler's business, not a bad step: the loss was finite, BatchNorm
statistics stand, nothing is counted. Under DDP the gradients are all-reduced before they are unscaled, so an overflow
on one rank is an Inf on every rank and all of them skip together. A non-finite *loss* is a bad step whatever the
precision: it is skipped before backward and the scale is left alone (it only multiplies the backward pass).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from lits.core.device import autocast
from lits.core.errors import LitsError
from lits.train import distributed
from lits.train.deep_supervision import supervised_loss
from lits.train.loss import targets_from_labels

log = logging.getLogger(__name__)


class NormStatsGuard:
    """BatchNorm running statistics change in the forward pass, before the loss is known to be finite: keep a copy
    to put back when a step is skipped (an Inf activation would otherwise poison them for good)."""

    def __init__(self, model: torch.nn.Module):
        self.buffers = list(model.buffers())
        self.saved = [b.detach().clone() for b in self.buffers]

    def save(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.saved, self.buffers)

    def restore(self) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self.buffers, self.saved)


@dataclass
class StepResult:
    loss: float
    bce: float
    dice: float
    bad: bool  # the loss was not finite on some rank: nothing was updated
    stop: bool  # some rank received SIGTERM / SIGINT
    out_of_time: bool  # the time budget is spent
    elapsed: float  # seconds into this session, the latest clock of all ranks


def prepare_batch(run, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops -> the network's input on the device: augmented (on the device, batched) and normalised."""
    image = batch["image"].to(run.device, non_blocking=True).float().contiguous(memory_format=run.memory_format)
    label = batch["label"].to(run.device, non_blocking=True)
    image, label = run.augment(image, label, run.state.augment_generator)
    return run.normalization.apply(image), label


def train_step(run, batch: dict, alpha: float) -> StepResult:
    """Forward, loss and (when every rank's loss is finite) backward and update; advances state.step/batch."""
    state, trainer = run.state, run.cfg.trainer
    image, label = prepare_batch(run, batch)
    if run.guard is not None:
        run.guard.save()
    with autocast(run.device, run.amp):
        logits = run.train_model(image)
    loss, parts = supervised_loss(run.loss_fn, logits, targets_from_labels(label), alpha)
    values = torch.stack([loss.detach(), parts["bce"], parts["dice"]]).float()
    elapsed = time.time() - run.started
    flags = torch.stack(
        [
            (~torch.isfinite(values[0])).float(),
            values.new_full((), float(run.stop.requested)),
            values.new_full((), float(run.budget.out_of_time(elapsed))),
            values.new_full((), elapsed),
        ]
    )
    distributed.all_reduce_(flags, "max")  # one host sync per step; a no-op in one process
    loss_value, bce_value, dice_value, bad, stop, out_of_time, elapsed = torch.cat([values, flags]).tolist()
    if bad:
        _skip(run)
    else:
        state.bad_in_row = 0
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if trainer.grad_clip:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(state.model.parameters(), trainer.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        state.sums.loss += loss_value
        state.sums.bce += bce_value
        state.sums.dice += dice_value
        state.sums.good += 1
    state.step += 1
    state.batch += 1
    return StepResult(loss_value, bce_value, dice_value, bool(bad), bool(stop), bool(out_of_time), elapsed)


def _skip(run) -> None:
    """A non-finite loss: put BatchNorm back, count it, abort after trainer.max_bad_steps in a row."""
    state, limit = run.state, run.cfg.trainer.max_bad_steps
    if run.guard is not None:
        run.guard.restore()
    state.bad_in_row += 1
    state.bad_total += 1
    state.sums.bad += 1
    if run.ctx.is_main:  # the decision is the same on every rank: say it once
        log.warning(
            "non-finite loss at epoch %d step %d: step skipped (%d in a row, trainer.max_bad_steps=%d)",
            state.epoch + 1,
            state.step,
            state.bad_in_row,
            limit,
        )
    if state.bad_in_row >= limit:
        last = run.ckpt_dir / "last.pt"
        where = f"; the last good checkpoint is {last}" if last.exists() else ""
        raise LitsError(
            f"{state.bad_in_row} non-finite losses in a row (epoch {state.epoch + 1}, step {state.step}, "
            f"trainer.max_bad_steps={limit}): training diverged or the data holds NaN/Inf; lower optim.lr, keep "
            f"trainer.grad_clip on, try trainer.amp=bf16/off, or check the data{where}"
        )
