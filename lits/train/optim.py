"""Optimizers, learning-rate schedules and the time budget that stretches both schedules onto a run.

Two recipes (config group `optim`):
* adamw: AdamW + cosine annealing over `optim.t_max` epochs (the published LiTS2017 recipe);
* sgd:   SGD with Nesterov momentum + polynomial decay lr * (1 - e / E) ** 0.9 (nnU-Net's).

Schedules are functions of the *schedule position*, an epoch count on the reference length `trainer.max_epochs`.
A run of exactly `max_epochs` epochs has position == epoch, set at the start of every epoch. Under `trainer.max_time`
the position follows the clock instead, step by step: max_epochs times the share of the budget spent
(`TimeBudget.progress_position`), so the LR and the loss's alpha schedule keep their shape (BCE warm-up, hybrid,
Dice; warm cosine, annealed end) however long an epoch is relative to the budget, even when a single epoch fills it.
The LR is set explicitly, so a resumed run needs no scheduler state besides the plan and the time spent.

Both optimizers are the fused implementations: one kernel per step instead of a loop of per-tensor ones (AdamW's step
on unet_small's parameters: 1.6 ms against 7.7 ms on one CPU core), and they take a device-side ``found_inf`` flag,
which is how a bad step is skipped without the host reading anything (lits/train/step.py).
"""

from __future__ import annotations

import logging
import math

import torch

from lits.core.config import OptimConfig, typed
from lits.core.errors import LitsError
from lits.core.tables import count

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "sgd")


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The fused optimizer `optim.name` names. SGD's momentum buffers start as zeros, which is what its first step
    would make of them (0.9 * 0 + g = g): a first step the fused kernel skips would otherwise leave them unset."""
    cfg = typed(OptimConfig, cfg, "optim")
    params = list(params)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    if cfg.name == "sgd":
        optimizer = torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=bool(cfg.nesterov),
            weight_decay=cfg.weight_decay,
            fused=True,
        )
        if cfg.momentum:
            for p in params:
                optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return optimizer
    raise LitsError(f"optim.name={cfg.name}: unknown optimizer; use optim=adamw or optim=sgd")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """`optimizer.load_state_dict(saved)`, keeping this optimizer's implementation: a checkpoint written before the
    optimizers were fused records ``fused: None``, which loading would otherwise restore."""
    groups = [{**g, "fused": True, "foreach": None} for g in saved["param_groups"]]
    optimizer.load_state_dict({**saved, "param_groups": groups})


def lr_at(cfg: OptimConfig, position: float, reference_epochs: int) -> float:
    """Learning rate at schedule position `position` (epochs on the reference length)."""
    cfg = typed(OptimConfig, cfg, "optim")
    schedule = cfg.schedule
    if schedule == "cosine":
        # closed form of torch's CosineAnnealingLR (periodic beyond t_max, as torch's is)
        t_max = float(cfg.t_max)
        return float(cfg.min_lr + (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * position / t_max)) / 2)
    if schedule == "poly":
        fraction = min(max(position / float(reference_epochs), 0.0), 1.0)
        return float(cfg.lr * (1.0 - fraction) ** float(cfg.poly_exponent))
    raise LitsError(f"optim.schedule={schedule}: unknown learning-rate schedule; choose cosine or poly")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class TimeBudget:
    """`trainer.max_time` minutes of training (data preparation excluded), planned in whole epochs.

    After every epoch the plan is refreshed from the mean cost of the epochs so far (their validations included):
    planned = done + floor(remaining / mean cost). Training ends after the planned epochs, and also stops mid-epoch
    if the clock runs out first (the last epoch then ends early; validation and checkpoints follow as usual). The
    clock runs out `reserve_s` early: the last validation's duration (rank 0 measures it), so that the final
    validation fits inside the budget too (before the first validation nothing is known to reserve).
    Without a budget the plan is simply `max_epochs`.
    """

    def __init__(self, minutes: float | None, max_epochs: int, spent_s: float = 0.0, planned: int | None = None):
        if minutes is not None and not (isinstance(minutes, (int, float)) and minutes > 0):
            raise LitsError(
                f"trainer.max_time={minutes}: give the training budget in minutes (> 0), or null for max_epochs"
            )
        self.seconds = None if minutes is None else 60.0 * float(minutes)
        self.max_epochs = int(max_epochs)
        self.spent_s = float(spent_s)  # training seconds of earlier sessions of this run (resume)
        self.planned = int(planned) if planned else self.max_epochs
        self.reserve_s = 0.0  # seconds kept for the final validation: the last one's duration

    def position(self, epoch: float) -> float:
        """Schedule position of `epoch` (reference epochs)."""
        return epoch * self.max_epochs / self.planned

    def progress_position(self, elapsed_s: float) -> float:
        """Under a budget: the schedule position of this moment, `elapsed_s` into this session: max_epochs times the
        share of the budget spent (all sessions), so the LR and alpha schedules keep their shape whatever the epoch
        size, the budget or the number of processes (at most max_epochs)."""
        return self.max_epochs * min(1.0, (self.spent_s + elapsed_s) / self.seconds)

    def out_of_time(self, elapsed_s: float) -> bool:
        """`elapsed_s` seconds into this session (earlier sessions' time is counted too)."""
        return self.seconds is not None and self.spent_s + elapsed_s + self.reserve_s >= self.seconds

    def replan(self, epochs_done: int, elapsed_s: float) -> int:
        """After `epochs_done` epochs (all sessions), `elapsed_s` seconds into this session: the new plan."""
        if self.seconds is None or epochs_done <= 0:
            return self.planned
        total = self.spent_s + elapsed_s
        cost = total / epochs_done
        self.planned = max(epochs_done, epochs_done + int((self.seconds - total) // cost))
        return self.planned

    def after_epoch(self, epochs_done: int, elapsed_s: float, out_of_time: bool) -> None:
        """Re-plan after an epoch (`elapsed_s`: this session's seconds); an epoch cut short by the clock is the last."""
        if self.seconds is None:
            return
        before = self.planned
        self.replan(epochs_done, elapsed_s)
        if out_of_time:
            self.planned = epochs_done
        if abs(self.planned - before) >= max(1, before // 10):  # small corrections are routine
            log.info("time budget: %s planned (was %d)", count(self.planned, "epoch"), before)

    @property
    def enabled(self) -> bool:
        return self.seconds is not None
