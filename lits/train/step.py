"""One optimisation step: device copy, augmentation, normalisation, AMP forward, loss, and a guarded update, with no
host synchronisation between logging points.

A non-finite loss is a bad step: nothing changes (no optimizer update, BatchNorm statistics put back, the fp16 loss
scale left alone) and it is counted; `trainer.max_bad_steps` in a row abort. All of that is decided on the device:
the flag ``bad`` (all-reduced, so every rank skips together) tells the fused optimizer to skip (its ``found_inf``),
selects the saved BatchNorm statistics and the saved loss scale, and is kept with the step's loss values in
`PendingSteps`. The host reads them back every LOG_EVERY steps, at an epoch's end, before a mid-epoch checkpoint and
at a stop (`settle`), and only then accounts for each step in order: sums, warnings, the abort, with the step numbers
they happened at. So a GPU never waits for the host inside a logging interval; a run aborted for bad steps may train
(skipped) steps up to the next read before it raises.

SIGTERM/SIGINT and the time budget: in one process they are read at every step (host-side, no device wait); under
DDP the three flags (stop, out of time, clock) travel in one tiny all-reduce at each read, so every rank stops or
ends the epoch at the same step, up to LOG_EVERY steps after the signal.

fp16 (trainer.amp=fp16, CUDA or CPU): the loss is scaled before backward, the gradients are unscaled before clipping,
and an Inf/NaN in the *gradients* (an fp16 overflow of the scaled backward pass) makes the GradScaler skip the
optimizer step and halve its scale. That is the scaler's business, not a bad step: the loss was finite, BatchNorm
statistics stand, nothing is counted. Under DDP the gradients are all-reduced before they are unscaled, so an overflow
on one rank is an Inf on every rank and all of them skip together. A non-finite *loss* is a bad step whatever the
precision, and the scale is left as it was (it only multiplies the backward pass).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from lits.core.device import autocast
from lits.core.errors import LitsError
from lits.train import distributed
from lits.train.deep_supervision import supervised_loss
from lits.train.loss import targets_from_labels

log = logging.getLogger(__name__)
LOG_EVERY = 10  # the host reads the steps' losses and flags every this many global steps (train_step/loss with them)


class NormStatsGuard:
    """BatchNorm running statistics change in the forward pass, before the loss is known to be finite: keep a copy
    to put back when a step is skipped (an Inf activation would otherwise poison them for good). Per dtype, the
    buffers are gathered into one flat tensor through views made once, so that saving is one kernel and the
    conditional restore three, whatever the number of layers."""

    def __init__(self, model: torch.nn.Module):
        groups: dict[torch.dtype, list[torch.Tensor]] = {}
        for buffer in model.buffers():
            groups.setdefault(buffer.dtype, []).append(buffer)
        self.groups = []  # (buffers, their flat views, saved copy, scratch, the scratch's views shaped as the buffers)
        for buffers in groups.values():
            flat = [b.detach().reshape(-1) for b in buffers]
            scratch = torch.cat(flat)
            pieces = [p.view_as(b) for p, b in zip(scratch.split([b.numel() for b in buffers]), buffers)]
            self.groups.append((buffers, flat, scratch.clone(), scratch, pieces))

    def save(self) -> None:
        with torch.no_grad():
            for _, flat, saved, _, _ in self.groups:
                torch.cat(flat, out=saved)

    def restore_where(self, bad: torch.Tensor) -> None:
        """Put the saved statistics back where ``bad`` (a 0-d tensor, 1 or 0) is set; no host read."""
        with torch.no_grad():
            for buffers, flat, saved, scratch, pieces in self.groups:
                torch.cat(flat, out=scratch)
                torch.where(bad > 0, saved, scratch, out=scratch)
                torch._foreach_copy_(buffers, pieces)


class PendingSteps:
    """The loss values and bad-step flags of the steps the host has not read yet, kept on the device (a read waits
    for the device to finish): at most LOG_EVERY of them, since every multiple of LOG_EVERY is a read."""

    def __init__(self, device: torch.device):
        self.rows = torch.zeros(LOG_EVERY, 4, device=device)  # loss, bce, dice, bad (1.0) per step
        self.first_step = 0  # the global step of rows[0]
        self.count = 0

    def add(self, step: int, values: torch.Tensor, bad: torch.Tensor) -> None:
        if self.count == 0:
            self.first_step = step
        self.rows[self.count] = torch.cat([values, bad.reshape(1)])
        self.count += 1

    def take(self, extra: torch.Tensor | None = None) -> tuple[list[list[float]], list[float]]:
        """(the pending rows, the values of ``extra``) in one host read; nothing is pending afterwards."""
        parts = [self.rows[: self.count].reshape(-1)] + ([extra] if extra is not None else [])
        flat = torch.cat(parts).tolist() if self.count or extra is not None else []
        rows = [flat[i : i + 4] for i in range(0, 4 * self.count, 4)]
        self.count = 0
        return rows, flat[4 * len(rows) :]


@dataclass
class StepResult:
    elapsed: float  # seconds into this session, the latest clock of all ranks as last agreed
    read: bool = False  # the host read the steps back at this step: the fields below hold; otherwise they are unknown
    loss: float = math.nan  # this step's loss, bce and dice terms (NaN when not read)
    bce: float = math.nan
    dice: float = math.nan
    bad: bool = False  # the loss was not finite on some rank: nothing was updated
    stop: bool = False  # some rank received SIGTERM / SIGINT
    out_of_time: bool = False  # the time budget is spent


def prepare_batch(run, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops -> the network's input on the device: augmented (on the device, batched) and normalised."""
    image = batch["image"].to(run.device, non_blocking=True).float().contiguous(memory_format=run.memory_format)
    label = batch["label"].to(run.device, non_blocking=True)
    image, label = run.augment(image, label, run.state.augment_generator)
    return run.normalization.apply(image), label


def train_step(run, batch: dict, alpha: float) -> StepResult:
    """Forward, loss, backward and an update that a non-finite loss on any rank turns into nothing (decided on the
    device); advances state.step/batch; the host reads the steps back when it is due (`conclude`)."""
    state = run.state
    image, label = prepare_batch(run, batch)
    if run.guard is not None:
        run.guard.save()
    with autocast(run.device, run.amp):
        logits = run.train_model(image)
    loss, parts = supervised_loss(run.loss_fn, logits, targets_from_labels(label), alpha)
    values = torch.stack([loss.detach(), parts["bce"], parts["dice"]]).float()
    bad = (~torch.isfinite(values[0])).float()
    distributed.all_reduce_(bad, "max")  # a device collective: every rank skips together, and nothing waits for it
    update(run, loss, bad)
    if run.guard is not None:
        run.guard.restore_where(bad)
    run.pending.add(state.step, values, bad)
    state.step += 1
    state.batch += 1
    return conclude(run)


def update(run, loss: torch.Tensor, bad: torch.Tensor) -> None:
    """Backward, clipping and the fused optimizer's step, which skips itself where ``bad`` is set. Under fp16 the
    GradScaler decides the skip from the gradients: a bad step marks them non-finite, and the scale and growth
    count the scaler then lowers are put back, so a bad loss never reaches the scaler."""
    optimizer, scaler, clip = run.optimizer, run.scaler, run.cfg.trainer.grad_clip
    parameters = run.state.model.parameters
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if not scaler.is_enabled():
        if clip:
            torch.nn.utils.clip_grad_norm_(parameters(), clip)
        optimizer.grad_scale, optimizer.found_inf = None, bad  # the fused optimizers' skip (what GradScaler passes)
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
        return
    first = next(p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None)
    first[(0,) * first.dim()].masked_fill_(bad > 0, math.nan)
    kept = [scaler._scale.clone(), scaler._growth_tracker.clone()]  # GradScaler keeps both on the device
    if clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters(), clip)
    scaler.step(optimizer)
    scaler.update()
    for now, before in zip((scaler._scale, scaler._growth_tracker), kept):
        now.copy_(torch.where(bad > 0, before, now))


def conclude(run) -> StepResult:
    """The step's result. The host reads the pending steps back (`settle`) every LOG_EVERY global steps and at the
    epoch's last batch, and in one process also when a stop signal or the time budget ends the epoch here; under DDP
    the ranks agree on stop, time and clock at those reads."""
    state = run.state
    elapsed = time.time() - run.started
    due = state.step % LOG_EVERY == 0 or state.batch >= run.steps_per_epoch
    if run.ctx.distributed:
        if not due:
            return StepResult(elapsed=run.clock)
        flags = torch.tensor(
            [float(run.stop.requested), float(run.budget.out_of_time(elapsed)), elapsed], device=run.device
        )
        row, (stop, out_of_time, elapsed) = settle(run, distributed.all_reduce_(flags, "max"))
    else:
        stop, out_of_time = run.stop.requested, run.budget.out_of_time(elapsed)
        if not (due or stop or out_of_time):
            return StepResult(elapsed=elapsed)
        row, _ = settle(run)
    loss, bce, dice, bad = row
    return StepResult(elapsed, True, loss, bce, dice, bool(bad), bool(stop), bool(out_of_time))


def settle(run, extra: torch.Tensor | None = None) -> tuple[list[float] | None, list[float]]:
    """Read the pending steps back (one host read, together with ``extra``) and account for each in order: its loss
    into the epoch's sums, or a bad step (warning, counts, the abort). Returns the last step's row (loss, bce, dice,
    bad; None when nothing was pending) and ``extra``'s values."""
    state = run.state
    first = run.pending.first_step
    rows, extra_values = run.pending.take(extra)
    for offset, (loss, bce, dice, bad) in enumerate(rows):
        if bad:
            _count_bad(run, first + offset)
            continue
        state.bad_in_row = 0
        state.sums.loss += loss
        state.sums.bce += bce
        state.sums.dice += dice
        state.sums.good += 1
    return (rows[-1] if rows else None), extra_values


def _count_bad(run, step: int) -> None:
    """A non-finite loss at global step `step` (already skipped on the device): count it, abort after
    trainer.max_bad_steps in a row."""
    state, limit = run.state, run.cfg.trainer.max_bad_steps
    state.bad_in_row += 1
    state.bad_total += 1
    state.sums.bad += 1
    if run.ctx.is_main:  # the decision is the same on every rank: say it once
        log.warning(
            "non-finite loss at epoch %d step %d: step skipped (%d in a row, trainer.max_bad_steps=%d)",
            state.epoch + 1,
            step,
            state.bad_in_row,
            limit,
        )
    if state.bad_in_row >= limit:
        last = run.ckpt_dir / "last.pt"
        where = f"; the last good checkpoint is {last}" if last.exists() else ""
        raise LitsError(
            f"{state.bad_in_row} non-finite losses in a row (epoch {state.epoch + 1}, step {step}, "
            f"trainer.max_bad_steps={limit}): training diverged or the data holds NaN/Inf; lower optim.lr, keep "
            f"trainer.grad_clip on, try trainer.amp=bf16/off, or check the data{where}"
        )
