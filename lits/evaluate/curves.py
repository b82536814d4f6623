"""The learning-curve picture of a training run (progress.png), drawn from its history.jsonl records.

Four panels sharing the epoch axis (epochs numbered from 1): the training loss with its pixel (BCE) and region
(Dice) parts and the Dice weight alpha; validation Dice of liver and tumour, raw and post-processed, with the epoch
best.pt holds; the learning rate; training throughput. The training run rewrites it at every validation and
evaluate.py draws the same picture for the checkpoint it scores, marking that checkpoint's epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from lits.core.vocabulary import heading
from lits.evaluate.pictures import png_bytes

# (history key, colour, line style) of the validation panel; the legend says what lits.core.vocabulary calls them
VAL_LINES = (
    ("val/liver_dice_post", "tab:green", "-"),
    ("val/liver_dice", "tab:green", ":"),
    ("val/tumor_dice_post", "tab:red", "-"),
    ("val/tumor_dice", "tab:red", ":"),
    ("val/tumor_dice_global_post", "tab:purple", "--"),
)
LOSS_LINES = (
    ("train/loss", "loss", "black", "-"),
    ("train/bce", "BCE part", "tab:blue", "--"),
    ("train/dice", "Dice part", "tab:orange", "--"),
)


def read_history(path: str | Path) -> list[dict]:
    """history.jsonl records (one per epoch, the latest record of an epoch wins); torn lines are skipped."""
    by_epoch: dict[int, dict] = {}
    path = Path(path)
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
            by_epoch[int(record["epoch"])] = record
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a kill
    return [by_epoch[e] for e in sorted(by_epoch)]


def _series(records: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["epoch"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [e for e, _ in points], [v for _, v in points]


def _loss_panel(ax, records) -> None:
    for key, label, color, style in LOSS_LINES:
        x, y = _series(records, key)
        ax.plot(x, y, style, color=color, marker="o", markersize=3, label=label)
    ax.set_ylabel("training loss")
    twin = ax.twinx()
    x, y = _series(records, "train/alpha")
    twin.step(x, y, where="mid", color="tab:gray", alpha=0.7, label="alpha (Dice weight)")
    twin.set_ylim(-0.05, 1.05)
    twin.set_ylabel("alpha", color="tab:gray")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.8)
    ax.set_title("training loss = alpha * Dice part + (1 - alpha) * BCE part", fontsize=10)


def _val_panel(ax, records, best: dict | None, mark: int | None) -> None:
    for key, color, style in VAL_LINES:
        label = heading(key)
        x, y = _series(records, key)
        if x:
            ax.plot(x, y, style, color=color, marker="o", markersize=3, label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("validation Dice")
    if best and best.get("epoch"):
        label = f"best.pt: epoch {best['epoch']} ({best['metric']} {best['value']:.3f})"
        ax.axvline(best["epoch"], color="black", linewidth=1.2, alpha=0.7, label=label)
    if mark is not None and (not best or mark != best.get("epoch")):
        ax.axvline(mark, color="tab:blue", linewidth=1.2, linestyle="--", label=f"the scored checkpoint: epoch {mark}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best", framealpha=0.8)
    else:
        ax.text(0.5, 0.5, "not validated yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_title("validation Dice (3D, per case unless global)", fontsize=10)


def _simple_panel(ax, records, key: str, ylabel: str, title: str, scientific: bool = False) -> None:
    from matplotlib.ticker import FuncFormatter

    x, y = _series(records, key)
    ax.plot(x, y, "-o", color="tab:blue", markersize=3)
    ax.set_ylim(bottom=0)
    if scientific:
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.1e}" if v else "0"))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)


def progress_png(records: Sequence[dict], best: dict | None = None, mark: int | None = None, title: str = "") -> bytes:
    """PNG of a run's learning curves. `records`: history.jsonl; `best`: {metric, value, epoch} of best.pt (or
    None); `mark`: an epoch to mark besides it (the checkpoint evaluate.py scores)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 7.5), dpi=100)
    axes = fig.subplots(2, 2, sharex=True)
    _loss_panel(axes[0, 0], records)
    _val_panel(axes[0, 1], records, best, mark)
    _simple_panel(axes[1, 0], records, "train/lr", "learning rate", "learning rate (set per epoch)", scientific=True)
    _simple_panel(axes[1, 1], records, "train/samples_per_s", "samples / s", "training throughput (all processes)")
    last = max((r["epoch"] for r in records), default=1)
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, max(last, 1) + 0.5)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title or "training progress", fontsize=12)
    fig.tight_layout()
    return png_bytes(fig)
