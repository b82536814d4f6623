"""The training loop: for each epoch, train its steps, validate, save, report; read it top to bottom.

One process, or one process per GPU under torchrun: every rank trains on its own share of each epoch's draws,
gradients are averaged by DistributedDataParallel, rank 0 alone validates and writes. Setup lives in run.py, the
step in step.py, everything cross-cutting (console, TensorBoard, history, checkpoints, fault injection) in hooks.py.

Faults: SIGTERM / SIGINT finish the current step, save last.pt with the in-epoch position and exit 128 + signal;
a resumed run (trainer.resume) continues bit for bit on CPU with trainer.deterministic=true.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass

import torch

from lits.train import distributed
from lits.train.hooks import EpochReport
from lits.train.loss import alpha_at
from lits.train.optim import lr_at, set_lr
from lits.train.run import Run
from lits.train.step import settle, train_step
from lits.train.validate import Validation, validate

log = logging.getLogger(__name__)
LOADER_SEED_STRIDE = 7919  # the loader's worker seeds of epoch e come from seed * stride + e


@dataclass
class EpochOutcome:
    alpha: float  # the loss's alpha at the epoch's first step ...
    alpha_end: float = 0.0  # ... and at its last (they differ under a time budget, which moves it step by step)
    interrupted: bool = False  # a stop signal ended the epoch early
    out_of_time: bool = False  # the time budget ended the epoch early (it still validates and saves)
    seconds: float = 0.0
    steps: int = 0  # steps trained in this session's part of the epoch


class Interrupted(SystemExit):
    """SIGTERM / SIGINT stopped training after last.pt was saved; exits with 128 + signal."""


def fit(run: Run) -> dict:
    """Train to the end of the run's plan (trainer.max_epochs, or what fits trainer.max_time); the summary."""
    state, hooks = run.state, run.hooks
    hooks.before_train(run)
    run.started = time.time()
    while state.epoch < run.budget.planned:
        outcome = train_epoch(run)  # a stop signal or the time budget may end it early
        if outcome.interrupted:
            _stop(run)  # last.pt at the exact position, then exit 128 + signal
        metrics = epoch_metrics(run, outcome)
        validation = validate_if_due(run)  # rank 0 only; the others wait in the gather below
        if validation is not None:
            metrics.update(validation.metrics)
        rank_states = distributed.all_gather_object({**state.rank_state(run.device, False), "stop": run.stop.requested})
        improved = state.end_epoch(metrics)  # state.epoch is now the finished epoch's number (from 1)
        picture = validation.picture if validation is not None else None
        hooks.after_epoch(run, EpochReport(state.epoch, metrics, improved, rank_states, picture))
        if any(r["stop"] for r in rank_states):
            _stop(run)
    summary = run_summary(run)
    hooks.after_train(run, summary)
    return summary


def train_epoch(run: Run) -> EpochOutcome:
    """The steps of the epoch in progress (from where a resumed run left it), until its end, a stop signal or the
    end of the time budget."""
    state, cfg = run.state, run.cfg
    outcome = EpochOutcome(alpha=set_schedule(run))
    run.sampler.set_epoch(state.epoch, skip=state.batch * cfg.trainer.batch_size)
    run.loader_generator.manual_seed(cfg.seed * LOADER_SEED_STRIDE + state.epoch)
    run.train_model.train()
    state.begin_epoch()
    run.hooks.before_epoch(run, outcome.alpha)
    started = time.perf_counter()
    for batch in run.loader:
        run.hooks.before_step(run)
        alpha = set_schedule(run) if run.budget.enabled else outcome.alpha  # a budget moves the schedules per step
        result = train_step(run, batch, alpha)
        run.clock, outcome.alpha_end = result.elapsed, alpha
        outcome.steps += 1
        run.hooks.after_step(run, result)
        if result.stop or result.out_of_time:
            outcome.interrupted, outcome.out_of_time = result.stop, result.out_of_time and not result.stop
            break
    settle(run)  # the epoch's last steps are already read back (a read is due there); this only makes it certain
    outcome.seconds = time.perf_counter() - started
    return outcome


def set_schedule(run: Run) -> float:
    """Set the learning rate for the current schedule position and return the loss's alpha there: the epoch's
    position for a fixed-length run, the clock's under a time budget (the clock all ranks agreed on last)."""
    budget, cfg = run.budget, run.cfg
    position = budget.progress_position(run.clock) if budget.enabled else budget.position(run.state.epoch)
    set_lr(run.optimizer, lr_at(cfg.optim, position, cfg.trainer.max_epochs))
    return alpha_at(position, cfg.loss.schedule)


def epoch_metrics(run: Run, outcome: EpochOutcome) -> dict[str, float]:
    """train/* of the finished epoch: means over every rank's good steps; the time budget is re-planned from the
    all-reduced clock, so every rank plans the same number of epochs."""
    sums, cfg = run.state.sums, run.cfg
    totals = torch.tensor(
        [sums.loss, sums.bce, sums.dice, sums.good, run.elapsed_s()], dtype=torch.float64, device=run.device
    )
    distributed.all_reduce_(totals)
    good = max(1.0, float(totals[3]))
    run.clock = float(totals[4]) / run.ctx.world_size
    run.budget.after_epoch(run.state.epoch + 1, run.clock, outcome.out_of_time)
    metrics = {
        "train/loss": float(totals[0]) / good,
        "train/bce": float(totals[1]) / good,
        "train/dice": float(totals[2]) / good,
        "train/alpha": outcome.alpha,
        "train/alpha_end": outcome.alpha_end,
        "train/lr": run.optimizer.param_groups[0]["lr"],
        "train/bad_steps": sums.bad,
    }
    if run.amp == "fp16":  # the GradScaler's loss scale: halved at every overflow, doubled after 2000 clean steps
        metrics["train/grad_scale"] = run.scaler.get_scale()
    if outcome.steps:
        samples = outcome.steps * cfg.trainer.batch_size * run.ctx.world_size
        metrics["train/samples_per_s"] = samples / outcome.seconds
        run.samples_trained, run.step_seconds = run.samples_trained + samples, run.step_seconds + outcome.seconds
    return metrics


def validate_if_due(run: Run) -> Validation | None:
    """Rank 0 validates every trainer.val_every epochs and after the last one (which one that is, the time budget
    may decide)."""
    epoch, t = run.state.epoch, run.cfg.trainer
    if not run.ctx.is_main or ((epoch + 1) % t.val_every and epoch != run.budget.planned - 1):
        return None
    model, cases = run.state.model, run.cases["val"]
    started = time.perf_counter()
    result = validate(model, cases, run.spec, run.device, run.amp, t.val_batch_size, t.val_tta, t.log_images,
                      t.progress)  # fmt: skip
    run.budget.reserve_s = time.perf_counter() - started  # a time budget keeps this much for the final validation
    return result


def run_summary(run: Run) -> dict:
    """What train_summary.json records."""
    state = run.state
    return {
        "best_metric": state.best.metric,
        "best_value": state.best.value,
        "best_epoch": state.best.epoch,  # numbered from 1 (0: never validated)
        "epochs": state.epoch,
        "samples_per_s": round(run.samples_trained / run.step_seconds, 1) if run.step_seconds else None,
        "max_time": run.cfg.trainer.max_time,
        "minutes": round(run.elapsed_s() / 60, 2),
        "run_dir": str(run.run_dir),
        "bad_steps": state.bad_total,
        "world_size": run.ctx.world_size,
        "resumed_from": run.resumed_from,
        "tuned": {},  # checkpoint name -> its tuned post-processing (tune_after: lits/train/tuning_hook.py)
    }


def _stop(run: Run) -> None:
    """A stop signal ended training: the hooks save last.pt at the position, then the process exits 128 + signal."""
    run.hooks.on_interrupt(run)
    signum = run.stop.signum or signal.SIGTERM
    log.warning(
        "stopped by %s at step %d: last.pt saved in %s; continue with trainer.resume=auto (same hydra.run.dir)",
        signal.Signals(signum).name,
        run.state.step,
        run.ckpt_dir,
    )
    raise Interrupted(128 + signum)
