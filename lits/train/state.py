"""TrainState: what a run carries from step to step and across a restart, and its checkpoint format.

The state owns the model, optimizer and GradScaler, the position (epoch in progress, batches of it done, global
step), the best monitored value, the fault counters, the time-budget plan and every random generator of this
process. `checkpoint()` turns it into the dict saved as last.pt / best.pt (plain tensors and Python values, loadable
with `torch.load(weights_only=True)`); `resume()` puts a loaded checkpoint back, exactly when the process layout
(world size, batch size) is unchanged.

Epochs are numbered from 1 wherever they are shown or saved (console, history.jsonl, TensorBoard, checkpoints,
train_summary.json): epoch N is the N-th pass over the data. Inside the loop `TrainState.epoch` counts the epochs
completed, which is also the 0-based index the sampler and the schedules take.

Checkpoint format 1 keys: model, optimizer, scaler, scheduler {planned_epochs}, train_seconds, epoch (the last
completed epoch = epochs completed; 0 before the first), step, best {metric, value, tiebreak, tiebreak_value, epoch
(0: none yet)}, metrics, position {epoch (the epoch in progress), batch (its batches done)}, world_size, batch_size,
rank_states [{rng, epoch_sums}], bad_steps, bad_in_row, and what the run fixes once: config (the resolved training
config), splits, normalization, inference (the versioned inference spec, lits/infer/spec.py), lits_version, format.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

import lits
from lits.core.errors import LitsError
from lits.train.checkpoint import rng_state, set_rng_state
from lits.train.optim import load_optimizer_state

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass
class EpochSums:
    """Running sums of the epoch in progress on this rank (carried through a mid-epoch checkpoint)."""

    loss: float = 0.0
    bce: float = 0.0
    dice: float = 0.0
    good: int = 0
    bad: int = 0


@dataclass
class Best:
    """The best value of the monitored metric so far and the epoch that reached it (0: none yet).

    Ties are common early on (tumour Dice 0 for several epochs): a tie on `metric` goes to the higher `tiebreak`
    value, and a tie on both to the later epoch, so best.pt is never an epoch that a later, equal one improved on.
    """

    metric: str
    tiebreak: str | None = None  # the secondary validation metric (trainer.monitor_tiebreak)
    value: float = -math.inf
    tiebreak_value: float = -math.inf
    epoch: int = 0

    def update(self, metrics: dict[str, float], epoch: int) -> bool:
        """Record `epoch`'s validation metrics if they beat (or tie) the best so far; True if they do."""
        value = metrics.get(self.metric)  # absent: the epoch was not validated
        if value is None or not math.isfinite(value):
            return False
        second = metrics.get(self.tiebreak, -math.inf) if self.tiebreak else -math.inf
        second = second if math.isfinite(second) else -math.inf
        if (value, second) < (self.value, self.tiebreak_value):
            return False
        self.value, self.tiebreak_value, self.epoch = float(value), float(second), epoch
        return True

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "value": self.value,
            "tiebreak": self.tiebreak,
            "tiebreak_value": self.tiebreak_value,
            "epoch": self.epoch,
        }

    @classmethod
    def from_dict(cls, saved: dict) -> Best:
        return cls(
            saved["metric"],
            saved["tiebreak"],
            float(saved["value"]),
            float(saved["tiebreak_value"]),
            int(saved["epoch"]),
        )


@dataclass
class TrainState:
    model: torch.nn.Module  # the plain network (not DDP-wrapped or compiled): its state_dict is what is saved
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    augment_generator: torch.Generator
    best: Best
    epoch: int = 0  # epochs completed (= the 0-based index of the epoch in progress; it is shown as epoch + 1)
    batch: int = 0  # batches of `epoch` this rank has done
    step: int = 0  # global optimizer steps attempted (skipped ones included)
    bad_total: int = 0
    bad_in_row: int = 0
    sums: EpochSums = field(default_factory=EpochSums)

    @property
    def generators(self) -> dict[str, torch.Generator]:
        return {"augment": self.augment_generator}

    def begin_epoch(self) -> None:
        """Start `self.epoch` from its first batch unless a resumed position already points into it."""
        if self.batch == 0:
            self.sums = EpochSums()

    def end_epoch(self, metrics: dict[str, float]) -> bool:
        """Close the epoch in progress with its metrics (val/* only when it was validated); True if it is the new
        best (`Best.update`: ties go to the tiebreak metric, then to the later epoch)."""
        improved = self.best.update(metrics, self.epoch + 1)
        self.epoch, self.batch = self.epoch + 1, 0
        return improved

    def rank_state(self, device: torch.device, with_sums: bool) -> dict:
        """This rank's part of a checkpoint: its random generators and (mid-epoch) its running sums."""
        return {"rng": rng_state(device, self.generators), "epoch_sums": dict(vars(self.sums)) if with_sums else None}

    def checkpoint(self, run_record: dict, rank_states: list, metrics: dict, plan: dict) -> dict:
        """The checkpoint dict at the current position. `run_record`: what the run fixes once (config, splits,
        normalization, inference spec, world_size, batch_size); `plan`: the time budget's {planned_epochs,
        train_seconds}."""
        return {
            "format": CHECKPOINT_FORMAT,
            "lits_version": lits.__version__,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "scheduler": {"planned_epochs": plan["planned_epochs"]},  # the LR is a function of the epoch (optim.py)
            "train_seconds": plan["train_seconds"],
            "epoch": self.epoch,  # the last completed epoch (numbered from 1) = epochs completed
            "step": self.step,
            "best": self.best.to_dict(),
            "metrics": metrics,
            "position": {"epoch": self.epoch + 1, "batch": self.batch},  # the epoch in progress, its batches done
            "rank_states": rank_states,
            "bad_steps": self.bad_total,
            "bad_in_row": self.bad_in_row,
            **run_record,
        }

    def resume(
        self,
        saved: dict,
        path: str,
        rank: int,
        world_size: int,
        batch_size: int,
        steps_per_epoch: int,
        device: torch.device,
        reseed,
    ) -> None:
        """Load a checkpoint written by `checkpoint()`. With the same world size and batch size every generator
        continues exactly; otherwise training resumes at the nearest batch with fresh random streams
        (`reseed(step)` seeds them) and a warning."""
        try:
            self.model.load_state_dict(saved["model"])
            load_optimizer_state(self.optimizer, saved["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LitsError(
                f"{path}: its weights or optimizer state do not fit this run's model ({first}); "
                "resume with the settings it was trained with, or start a new run"
            ) from None
        if saved["scaler"] or not self.scaler.is_enabled():
            self.scaler.load_state_dict(saved["scaler"])
        else:  # written with trainer.amp other than fp16: a disabled scaler saves nothing
            log.warning("%s: no GradScaler state (not trained with fp16); the scaler starts at its initial scale", path)
        self.epoch, self.batch = int(saved["position"]["epoch"]) - 1, int(saved["position"]["batch"])
        self.step, self.bad_total = int(saved["step"]), int(saved["bad_steps"])
        self.bad_in_row = int(saved["bad_in_row"])
        self.best = Best.from_dict(saved["best"])
        ranks = saved["rank_states"]
        if len(ranks) == world_size == saved["world_size"] and saved["batch_size"] == batch_size:
            set_rng_state(ranks[rank]["rng"], device, self.generators)
            carried = ranks[rank]["epoch_sums"] if self.batch else None
            self.sums = EpochSums(**carried) if carried else EpochSums()
        else:
            consumed = self.batch * int(saved["batch_size"]) * int(saved["world_size"])
            self.batch = consumed // (batch_size * world_size)
            reseed(self.step)
            log.warning(
                "the checkpoint was written by %s process(es) with batch size %s (now %d x %d): resuming at the "
                "nearest batch with fresh random streams, not exactly",
                saved["world_size"],
                saved["batch_size"],
                world_size,
                batch_size,
            )
        self.batch = min(self.batch, steps_per_epoch)
