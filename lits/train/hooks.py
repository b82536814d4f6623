"""Cross-cutting concerns of the training loop as hooks (after detectron2's HookBase): the loop calls every hook at
fixed points and knows nothing of what they do.

    before_train(run)            after setup, before the first step
    before_epoch(run, alpha)     an epoch (or the rest of a resumed one) starts
    before_step(run)             a batch is about to be trained
    after_step(run, result)      after the step (StepResult), on every rank
    after_epoch(run, report)     after validation (EpochReport), on every rank
    on_interrupt(run)            SIGTERM/SIGINT stopped the epoch; every rank, before the process exits 128 + signal
    after_train(run, summary)    the run is finished

Hooks that write files run on rank 0 only (`lits.train.run.build_hooks`); the checkpoint hook runs everywhere because
saving gathers every rank's random state.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import time
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from lits.core.errors import LitsError
from lits.core.files import atomic_path, write_atomic, write_bytes_atomic
from lits.core.tables import count
from lits.evaluate.curves import progress_png, read_history
from lits.infer.checkpoint import save_checkpoint
from lits.train import console, distributed
from lits.train.checkpoint import remove_stale_temps
from lits.train.console import shown_path
from lits.train.step import LOG_EVERY, settle

log = logging.getLogger(__name__)


@dataclass
class EpochReport:
    epoch: int  # the finished epoch, numbered from 1
    metrics: dict[str, float]  # train/* and, when validated, val/*
    improved: bool  # a new best of trainer.monitor
    rank_states: list[dict]  # every rank's random state (and stop flag) at the end of the epoch
    picture: object = None  # the validation picture (H, W, 3), or None


class Hook:
    def before_train(self, run) -> None: ...
    def before_epoch(self, run, alpha: float) -> None: ...
    def before_step(self, run) -> None: ...
    def after_step(self, run, result) -> None: ...
    def after_epoch(self, run, report: EpochReport) -> None: ...
    def on_interrupt(self, run) -> None: ...
    def after_train(self, run, summary: dict) -> None: ...


class Hooks(Hook):
    """Calls each hook in order. Per step, only the hooks that define a step method are called: a hook with nothing
    to do between steps costs the loop nothing."""

    def __init__(self, hooks: list[Hook]):
        self.hooks = hooks
        self.step_hooks = {
            name: [h for h in hooks if getattr(type(h), name) is not getattr(Hook, name)]
            for name in ("before_step", "after_step")
        }

    def before_train(self, run) -> None:
        for hook in self.hooks:
            hook.before_train(run)

    def before_epoch(self, run, alpha: float) -> None:
        for hook in self.hooks:
            hook.before_epoch(run, alpha)

    def before_step(self, run) -> None:
        for hook in self.step_hooks["before_step"]:
            hook.before_step(run)

    def after_step(self, run, result) -> None:
        for hook in self.step_hooks["after_step"]:
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
    """The plan and the expected duration, a progress bar per epoch (rank 0, trainer.progress), one line per epoch
    with its duration and an ETA, and a closing summary (lits/train/console.py formats them)."""

    def __init__(self):
        self.bar, self.session_epochs, self.session_steps, self.clock = None, 0, 0, None
        self.epoch_started = 0.0

    def before_train(self, run) -> None:
        t = run.cfg.trainer
        log.info(console.plan_line(run))
        if run.state.epoch >= run.budget.planned:
            log.info(
                "%s: all %s are already trained; nothing to do", run.resumed_from, count(run.budget.planned, "epoch")
            )
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
        self.epoch_started = time.perf_counter()

    def after_step(self, run, result) -> None:
        self.bar.update()
        if result.read and not result.bad:
            self.bar.set_postfix(loss=f"{result.loss:.4f}", refresh=False)
        self.session_steps += 1
        if self.session_steps == console.WARMUP_STEPS:
            self.clock = time.perf_counter()
        elif self.clock is not None and self._estimate_now(run, result):
            steps = self.session_steps - console.WARMUP_STEPS
            rate = steps * run.cfg.trainer.batch_size * run.ctx.world_size / (time.perf_counter() - self.clock)
            self.clock = None  # once per session
            self.bar.clear()
            log.info(console.estimate_line(run, rate, steps))
            warning = console.budget_warning(run, rate)
            if warning:
                log.warning("%s", warning)
            self.bar.refresh()
        if result.out_of_time and not result.stop:
            self.bar.clear()
            log.info("time budget reached at step %d of %d of epoch %d: the epoch ends here; validation and "
                     "checkpoints follow", run.state.batch, run.steps_per_epoch, run.state.epoch + 1)  # fmt: skip
        if result.stop or result.out_of_time or run.state.batch >= run.steps_per_epoch:
            self.bar.close()  # before validation draws its own bar

    def _estimate_now(self, run, result) -> bool:
        measured = self.session_steps - console.WARMUP_STEPS
        return measured >= console.ESTIMATE_STEPS or run.state.batch >= run.steps_per_epoch or result.out_of_time

    def after_epoch(self, run, report: EpochReport) -> None:
        self.bar.close()
        self.session_epochs += 1
        seconds = time.perf_counter() - self.epoch_started  # training, validation and saving
        log.info(console.epoch_line(run, report, seconds, self.session_epochs))

    def on_interrupt(self, run) -> None:
        if self.bar is not None:
            self.bar.close()

    def after_train(self, run, summary: dict) -> None:
        if run.ctx.is_main:
            history = read_history(run.run_dir / "history.jsonl")
            for line in console.summary_lines(run, summary, history):
                log.info(line)


class TensorBoardHook(Hook):
    """<run>/tensorboard/train: train/* and val/* per epoch (x axis: the epoch, from 1), the validation picture
    (val/overlay), and train_step/loss every LOG_EVERY optimizer steps, where the host reads the losses back (x axis:
    the global optimizer step).
    evaluate.py writes beside it, in <run>/tensorboard/evaluate/<split>, so each shows as its own run."""

    def before_train(self, run) -> None:
        self.writer = SummaryWriter(str(run.run_dir / "tensorboard" / "train"))
        if run.resumed_from is None:
            self.writer.add_text("config", "```\n" + OmegaConf.to_yaml(run.record["config"]) + "\n```")

    def after_step(self, run, result) -> None:
        if run.state.step % LOG_EVERY == 0 and result.read and not result.bad:
            self.writer.add_scalar("train_step/loss", result.loss, run.state.step)

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
    """history.jsonl: one line per epoch (numbered from 1). A resumed run keeps the records of the epochs it does
    not redo."""

    def before_train(self, run) -> None:
        self.path = run.run_dir / "history.jsonl"
        source = run.previous_run_dir / "history.jsonl" if run.previous_run_dir else self.path
        kept = []
        for line in source.read_text().splitlines() if source.exists() else []:
            try:
                if json.loads(line)["epoch"] <= run.state.epoch:  # completed before the resume point
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


class ProgressPlotHook(Hook):
    """progress.png: the learning curves (lits/evaluate/curves.py), rewritten atomically at every validation and at
    the end. Runs after HistoryHook, whose history.jsonl it draws."""

    def _draw(self, run) -> None:
        records = read_history(run.run_dir / "history.jsonl")
        best = run.state.best
        title = f"{run.cfg.name}: {shown_path(run.run_dir)}"
        png = progress_png(records, {"metric": best.metric, "value": best.value, "epoch": best.epoch}, title=title)
        write_bytes_atomic(run.run_dir / "progress.png", png)

    def after_epoch(self, run, report: EpochReport) -> None:
        if any(key.startswith("val/") for key in report.metrics):
            self._draw(run)

    def after_train(self, run, summary: dict) -> None:
        self._draw(run)


class CheckpointHook(Hook):
    """last.pt at every epoch end (and every trainer.save_every_steps steps, and on a stop signal), best.pt at every
    new best. Saving gathers every rank's random state, so every rank runs this hook; rank 0 writes.

    At a new best, best.pt is written (atomically) before last.pt records it: a kill at any moment leaves last.pt
    recording a best that best.pt holds, or best.pt one epoch ahead of last.pt (`reconcile_best` makes the resumed
    run count from best.pt's own record, so the pair agrees again)."""

    def __init__(self, save=save_checkpoint):
        self.save = save  # `save_checkpoint`; fault injection replaces it with one that dies mid-write

    def before_train(self, run) -> None:
        if run.ctx.is_main:
            remove_stale_temps(run.ckpt_dir)  # temp files of a save that a kill interrupted

    def save_position(self, run) -> None:
        """last.pt in the middle of the epoch in progress (a collective: every rank calls it)."""
        settle(run)  # the epoch's sums must include every step trained so far
        rank_states = distributed.all_gather_object(run.state.rank_state(run.device, with_sums=True))
        if run.ctx.is_main:
            self.save(run.checkpoint(rank_states, {}), run.ckpt_dir / "last.pt")

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
        if report.improved:
            self.save(state, run.ckpt_dir / "best.pt")  # first: last.pt must never record a best that is not on disk
        self.save(state, run.ckpt_dir / "last.pt")


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


def dying_save(kill_at: int):
    """TEST ONLY (faults.kill_during_save): `save_checkpoint`, except that the process SIGKILLs itself halfway through
    writing its `kill_at`-th checkpoint file (1-based): a torn temp file beside the untouched target."""
    count = 0

    def save(state: dict, path) -> None:
        nonlocal count
        count += 1
        if count < kill_at:
            save_checkpoint(state, path)
            return
        data = io.BytesIO()
        torch.save(state, data)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data.getbuffer()[: data.tell() // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

    return save
