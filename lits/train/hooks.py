"""Cross-cutting concerns of the training loop as hooks (after detectron2's HookBase): the loop calls every hook at
fixed points and knows nothing of what they do.

    before_train(run)            after setup, before the first step
    before_epoch(run, alpha)     an epoch (or the rest of a resumed one) starts
    before_step(run)             a batch is about to be trained
    after_step(run, result)      after the step (StepResult), on every rank
    after_epoch(run, report)     after validation (EpochReport), on every rank
    on_interrupt(run)            SIGTERM/SIGINT stopped the epoch; every rank, before the process exits 128 + signal
    after_train(run, summary)    the run is finished

Hooks that write files run on rank 0 only (`build_hooks`); the checkpoint hook runs everywhere because saving
gathers every rank's random state.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from lits.core.errors import LitsError
from lits.core.files import write_atomic
from lits.train import distributed
from lits.train.checkpoint import remove_stale_temps, save_checkpoint

log = logging.getLogger(__name__)

LOSS_STEP_EVERY = 10  # train/loss_step is logged every this many optimizer steps


@dataclass
class EpochReport:
    epoch: int  # the finished epoch (0-based)
    metrics: dict[str, float]  # train/* and, when validated, val/*
    improved: bool  # a new best of trainer.monitor
    rank_states: list[dict]  # every rank's random state (and stop flag) at the end of the epoch
    picture: object = None  # the validation overlay (H, W, 3), or None


class Hook:
    def before_train(self, run) -> None: ...
    def before_epoch(self, run, alpha: float) -> None: ...
    def before_step(self, run) -> None: ...
    def after_step(self, run, result) -> None: ...
    def after_epoch(self, run, report: EpochReport) -> None: ...
    def on_interrupt(self, run) -> None: ...
    def after_train(self, run, summary: dict) -> None: ...


class Hooks(Hook):
    """Calls each hook in order."""

    def __init__(self, hooks: list[Hook]):
        self.hooks = hooks

    def before_train(self, run) -> None:
        for hook in self.hooks:
            hook.before_train(run)

    def before_epoch(self, run, alpha: float) -> None:
        for hook in self.hooks:
            hook.before_epoch(run, alpha)

    def before_step(self, run) -> None:
        for hook in self.hooks:
            hook.before_step(run)

    def after_step(self, run, result) -> None:
        for hook in self.hooks:
            hook.after_step(run, result)

    def after_epoch(self, run, report: EpochReport) -> None:
        for hook in self.hooks:
            hook.after_epoch(run, report)

    def on_interrupt(self, run) -> None:
        for hook in self.hooks:
            hook.on_interrupt(run)

    def after_train(self, run, summary: dict) -> None:
        for hook in self.hooks:
            hook.after_train(run, summary)


class ConsoleHook(Hook):
    """A progress bar per epoch (rank 0, trainer.progress) and one log line per epoch."""

    def __init__(self):
        self.bar = None

    def before_train(self, run) -> None:
        t = run.cfg.trainer
        if run.state.epoch >= run.budget.planned:
            log.info("%s: all %d epochs are already trained; nothing to do", run.resumed_from, run.budget.planned)
        if t.max_time is not None:
            log.info(
                "time budget trainer.max_time=%g min: the run lasts as many epochs as fit (planned after each "
                "epoch); the LR and loss schedules are stretched from trainer.max_epochs=%d onto it",
                t.max_time,
                t.max_epochs,
            )

    def before_epoch(self, run, alpha: float) -> None:
        enabled = run.cfg.trainer.progress and run.ctx.is_main
        self.bar = tqdm(
            total=run.steps_per_epoch,
            initial=run.state.batch,
            leave=False,
            dynamic_ncols=True,
            desc=f"epoch {run.state.epoch + 1}/{run.budget.planned} alpha={alpha:.2f}",
            disable=not enabled,
        )

    def after_step(self, run, result) -> None:
        self.bar.update()
        if not result.bad:
            self.bar.set_postfix(loss=f"{result.loss:.4f}", refresh=False)

    def after_epoch(self, run, report: EpochReport) -> None:
        self.bar.close()
        m, monitor = report.metrics, run.cfg.trainer.monitor
        wanted = (monitor, "val/liver_dice", "val/tumor_dice_post")
        shown = " ".join(f"{k.split('/')[1]}={v:.4f}" for k, v in m.items() if k in wanted)
        log.info(
            "epoch %d/%d alpha=%.2f loss=%.4f (bce %.4f dice %.4f) %.0f samples/s%s %s%s",
            report.epoch + 1,
            run.budget.planned,
            m["train/alpha"],
            m["train/loss"],
            m["train/bce"],
            m["train/dice"],
            m.get("train/samples_per_s") or 0.0,
            f" bad_steps={m['train/bad_steps']}" if m["train/bad_steps"] else "",
            shown,
            " *best*" if report.improved else "",
        )

    def on_interrupt(self, run) -> None:
        if self.bar is not None:
            self.bar.close()

    def after_train(self, run, summary: dict) -> None:
        log.info(
            "done in %.1f min: best %s=%.4f at epoch %d -> %s",
            summary["minutes"],
            summary["best_metric"],
            summary["best_value"],
            summary["best_epoch"] + 1,
            run.ckpt_dir / "best.pt",
        )


class TensorBoardHook(Hook):
    """train/* and val/* scalars per epoch, train/loss_step every LOSS_STEP_EVERY steps, val/overlay images."""

    def before_train(self, run) -> None:
        self.writer = SummaryWriter(str(run.run_dir / "tensorboard"))
        if run.resumed_from is None:
            self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(run.record["config"]) + "\n```")

    def after_step(self, run, result) -> None:
        if run.state.step % LOSS_STEP_EVERY == 0 and not result.bad:
            self.writer.add_scalar("train/loss_step", result.loss, run.state.step)

    def after_epoch(self, run, report: EpochReport) -> None:
        if report.picture is not None:
            self.writer.add_image("val/overlay", report.picture, report.epoch, dataformats="HWC")
        for key, value in report.metrics.items():
            self.writer.add_scalar(key, value, report.epoch)
        self.writer.flush()  # visible in TensorBoard now, and on disk if the process is stopped next

    def on_interrupt(self, run) -> None:
        self.writer.close()

    def after_train(self, run, summary: dict) -> None:
        self.writer.close()


class HistoryHook(Hook):
    """history.jsonl: one line per epoch. A resumed run keeps the records of the epochs it does not redo."""

    def before_train(self, run) -> None:
        self.path = run.run_dir / "history.jsonl"
        source = run.previous_run_dir / "history.jsonl" if run.previous_run_dir else self.path
        kept = []
        for line in source.read_text().splitlines() if source.exists() else []:
            try:
                if json.loads(line)["epoch"] < run.state.epoch:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill
        if source.exists():
            write_atomic(self.path, "".join(kept))

    def after_epoch(self, run, report: EpochReport) -> None:
        record = {
            "epoch": report.epoch,
            "step": run.state.step,
            "elapsed_s": round(run.elapsed_s(), 1),
            **report.metrics,
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class CheckpointHook(Hook):
    """last.pt at every epoch end (and every trainer.save_every_steps steps, and on a stop signal), best.pt at every
    new best. Saving gathers every rank's random state, so every rank runs this hook; rank 0 writes."""

    def before_train(self, run) -> None:
        if run.ctx.is_main:
            remove_stale_temps(run.ckpt_dir)  # temp files of a save that a kill interrupted

    def save_position(self, run) -> None:
        """last.pt in the middle of the epoch in progress (a collective: every rank calls it)."""
        rank_states = distributed.all_gather_object(run.state.rank_state(run.device, with_sums=True))
        if run.ctx.is_main:
            save_checkpoint(run.checkpoint(rank_states, {}), run.ckpt_dir / "last.pt")

    def after_step(self, run, result) -> None:
        every = run.cfg.trainer.save_every_steps
        inside = run.state.batch < run.steps_per_epoch
        if every and run.state.step % every == 0 and inside and not (result.stop or result.out_of_time):
            self.save_position(run)

    def on_interrupt(self, run) -> None:
        if run.state.batch:  # stopped inside an epoch (at an epoch's end last.pt is already current)
            self.save_position(run)

    def after_epoch(self, run, report: EpochReport) -> None:
        if not run.ctx.is_main:
            return
        state = run.checkpoint(report.rank_states, {k: v for k, v in report.metrics.items() if k.startswith("val/")})
        save_checkpoint(state, run.ckpt_dir / "last.pt")
        if report.improved:
            save_checkpoint(state, run.ckpt_dir / "best.pt")


class FaultHook(Hook):
    """TEST ONLY (`debug=faults`): NaN input batches or an overflowing backward pass at chosen steps, a signal to
    itself at a chosen step, and each rank's sample draws written to <run dir>/debug/. Acts on the last rank, like a
    fault on one machine."""

    def __init__(self, faults, rank: int, world_size: int):
        self.faults, self.rank = faults, rank
        self.acts = rank == world_size - 1

    def before_train(self, run) -> None:
        run.sampler.record = self.faults.sample_log
        if self.acts and self.faults.nan_steps:
            steps = set(self.faults.nan_steps)

            def poison(module, inputs):  # runs inside the forward pass of training steps only
                if module.training and run.state.step in steps:
                    return (inputs[0] * float("nan"),)
                return None

            run.state.model.register_forward_pre_hook(poison)
        if self.faults.overflow_steps:
            self._overflow(run, set(self.faults.overflow_steps))

    def _overflow(self, run, steps: set[int]) -> None:
        """An Inf in the first parameter's gradient at `steps` (before DDP all-reduces it), the loss left finite."""
        if run.amp != "fp16":
            raise LitsError(f"faults.overflow_steps needs trainer.amp=fp16 (the GradScaler); got {run.amp}")
        if not self.acts:
            return
        first = next(run.state.model.parameters())
        first.register_hook(lambda grad: torch.full_like(grad, float("inf")) if run.state.step in steps else None)

    def before_step(self, run) -> None:
        if self.acts and run.state.step == self.faults.kill_at_step:
            os.kill(os.getpid(), self.faults.signal_number)

    def after_epoch(self, run, report: EpochReport) -> None:
        if self.faults.sample_log:
            folder = run.run_dir / "debug"
            folder.mkdir(parents=True, exist_ok=True)
            drawn = run.sampler.drawn
            with open(folder / f"samples-rank{self.rank}.jsonl", "a") as f:
                f.write(
                    json.dumps(
                        {
                            "epoch": report.epoch,
                            "rank": self.rank,
                            "slices": [s for s, _ in drawn],
                            "draws": [d for _, d in drawn],
                        }
                    )
                    + "\n"
                )


def build_hooks(run) -> Hooks:
    """The hooks of this rank: console and checkpoints everywhere, files on rank 0, faults only under debug=faults."""
    hooks: list[Hook] = [ConsoleHook()]
    if run.ctx.is_main:
        hooks += [TensorBoardHook(), HistoryHook()]
    hooks.append(CheckpointHook())
    if run.cfg.faults is not None:
        hooks.append(FaultHook(run.cfg.faults, run.ctx.rank, run.ctx.world_size))
    return Hooks(hooks)
