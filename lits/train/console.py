"""What a training run prints: where it writes and how to watch it, its expected duration, one line per epoch with
its duration and an ETA, and a closing summary with the next commands. Formatting only; ConsoleHook prints it.

The expected duration is first estimated from the training throughput of the first steps (after a short warm-up,
validation not yet included); from the first epoch on, every epoch line's ETA is the mean wall time per epoch of
this session (training, validation, checkpoints) times the epochs left.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch

from lits.core.device import cpu_info
from lits.core.tables import count
from lits.core.vocabulary import heading
from lits.evaluate.report import text_table

WARMUP_STEPS = 2  # the first steps are slow (allocations, cuDNN autotuning, compilation): left out of the estimate
ESTIMATE_STEPS = 20  # the throughput estimate covers this many steps after the warm-up (fewer if an epoch is shorter)
MAX_LINE = 120  # characters of an epoch line
MIN_BUDGET_EPOCHS = 3  # a time budget that fits fewer epochs is warned about (the first one or two only find the organ)
# the closing table's validation columns: (history key, heading)
SUMMARY_COLUMNS = tuple(
    (key, heading(key, short=True))
    for key in ("val/liver_dice_post", "val/tumor_dice_post", "val/tumor_dice_global_post", "val/tumor_dice",
                "val/lesion_score")
)  # fmt: skip


def shown_path(path: str | Path) -> str:
    """`path` relative to the working folder when it lies inside it (shorter to read and to paste), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def duration(seconds: float) -> str:
    """41s, 3m05s, 1h12m."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def device_name(device: torch.device) -> str:
    """The processor that trains: the GPU's name, or the CPU's model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = cpu_info().get("model name") or platform.processor() or platform.machine()
    return f"{model}, {torch.get_num_threads()} threads of {os.cpu_count()} CPUs"


def opening_line(run_dir: Path) -> str:
    """The console's first line: where the run goes."""
    return f"run folder: {shown_path(run_dir)}"


def watch_line(run_dir: Path) -> str:
    """Once the run has passed its start-up checks (a refused one leaves no folder to watch): how to watch it."""
    return f"watch it:   tensorboard --logdir {shown_path(run_dir / 'tensorboard')}"


def plan_line(run) -> str:
    t, samples = run.cfg.trainer, run.steps_per_epoch * run.cfg.trainer.batch_size * run.ctx.world_size
    length = (
        f"as many epochs as fit in {t.max_time:g} min" if t.max_time is not None else count(run.budget.planned, "epoch")
    )
    return (
        f"plan: {length}, each {samples} samples ({run.steps_per_epoch} steps of {t.batch_size}"
        f"{f' x {run.ctx.world_size} processes' if run.ctx.world_size > 1 else ''}), validation every {t.val_every} "
        f"epochs on {len(run.cases['val'])} cases; {run.device.type} ({device_name(run.device)}), amp {run.amp}"
    )


def estimate_line(run, rate: float, steps: int) -> str:
    """The expected duration from `rate` samples/s over the last `steps` steps (training only)."""
    samples = run.steps_per_epoch * run.cfg.trainer.batch_size * run.ctx.world_size
    epoch_s = samples / rate
    left = run.budget.planned - run.state.epoch
    if run.cfg.trainer.max_time is not None:
        fit = run.cfg.trainer.max_time * 60 / epoch_s
        amount = count(int(fit), "epoch") if fit >= 1 else f"{fit * run.steps_per_epoch:.0f} of an epoch's steps"
        expected = f"the {run.cfg.trainer.max_time:g} min budget fits about {amount} without validation"
    else:
        expected = f"{count(left, 'epoch')} ~{duration(left * epoch_s)} of training"
    return (
        f"expected: {rate:.0f} samples/s over {steps} steps, {duration(epoch_s)} per epoch; {expected} "
        "plus validation (the epoch lines' ETA includes it)"
    )


def budget_warning(run, rate: float) -> str | None:
    """A warning when trainer.max_time fits less than MIN_BUDGET_EPOCHS epochs at `rate` samples/s: the LR and loss
    schedules of trainer.max_epochs would be squeezed into a few hundred steps, too few to learn anything."""
    t = run.cfg.trainer
    if t.max_time is None:
        return None
    epoch_s = run.steps_per_epoch * t.batch_size * run.ctx.world_size / rate
    fit = t.max_time * 60 / epoch_s
    if fit >= MIN_BUDGET_EPOCHS:
        return None
    enough = math.ceil(MIN_BUDGET_EPOCHS * epoch_s / 60)
    return (
        f"trainer.max_time={t.max_time:g} fits only {fit:.1f} epochs ({fit * run.steps_per_epoch:.0f} steps) at this "
        f"speed: the LR and loss schedules of trainer.max_epochs={t.max_epochs} are squeezed into them, too few to "
        f"learn much; give trainer.max_time={enough} or more (about {MIN_BUDGET_EPOCHS} epochs)"
    )


def epoch_line(run, report, seconds: float, session_epochs: int) -> str:
    """One line per epoch (at most 120 characters): number, duration (training, validation, saving), ETA of the
    run, loss with the schedule's alpha (the Dice weight: a loss that rises with alpha is the schedule, not
    divergence) and its parts (dropped when the line would be too long), throughput, post-processed validation Dice,
    best mark."""
    m, planned = report.metrics, run.budget.planned
    left = planned - report.epoch
    eta = run.elapsed_s() / max(1, session_epochs) * left
    loss = f"loss {m['train/loss']:.3f} (α {m['train/alpha']:.2f}"
    parts = [
        f"epoch {report.epoch}/{planned} {duration(seconds)}" + (f" ETA {duration(eta)}" if left else ""),
        f"{loss}: bce {m['train/bce']:.3f} dice {m['train/dice']:.3f})",
        f"{m.get('train/samples_per_s') or 0:.0f} samples/s",
    ]
    if m["train/bad_steps"]:
        parts.append(f"{m['train/bad_steps']} bad steps")
    if "val/tumor_dice_post" in m:
        parts.append(
            f"val liver {m['val/liver_dice_post']:.3f} tumour {m['val/tumor_dice_post']:.3f}"
            + (" *best*" if report.improved else "")
        )
    line = " | ".join(parts)
    if len(line) > MAX_LINE:
        parts[1] = f"{loss})"
        line = " | ".join(parts)
    return line


def summary_lines(run, summary: dict, history: list[dict]) -> list[str]:
    """The closing summary: time and throughput, best and last validated epochs, where best.pt is, what next."""
    rate = summary["samples_per_s"]
    lines = [
        f"done: {count(summary['epochs'], 'epoch')} in {summary['minutes']:.1f} min"
        + (f", {rate:.0f} samples/s while training" if rate else "")
    ]
    validated = [r for r in history if "val/tumor_dice_post" in r]
    best = next((r for r in validated if r["epoch"] == summary["best_epoch"]), None)
    chosen = [("best", best)] if best else []
    if validated and validated[-1] is not best:
        chosen.append(("last", validated[-1]))
    if chosen:
        rows = [{"": name, "epoch": r["epoch"], **{k: r.get(k) for k, _ in SUMMARY_COLUMNS}} for name, r in chosen]
        lines += text_table(rows, [("", ""), ("epoch", "epoch"), *SUMMARY_COLUMNS]).splitlines()
    lines += [f"{name}: {line}" for name, line in summary["tuned"].items()]
    ckpt = shown_path(run.ckpt_dir / "best.pt")
    tiebreak = run.cfg.trainer.monitor_tiebreak
    lines += [
        f"best.pt: {ckpt} (highest {summary['best_metric']}"
        + (f", ties: {tiebreak}, then later)" if tiebreak else ")"),
        f"next:    python evaluate.py ckpt={ckpt}",
        f"         tensorboard --logdir {shown_path(run.run_dir / 'tensorboard')}",
    ]
    return lines
