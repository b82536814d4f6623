#!/usr/bin/env python
"""Compare finished training runs by experiment, over seeds, as one markdown table.

    python scripts/compare_runs.py DIR [DIR ...] [--out DIR]

A finished run is a folder holding .hydra/config.yaml, history.jsonl and train_summary.json (what train.py writes);
they are searched for recursively below each DIR, so a multirun sweep folder (outputs/multirun/<time>) or all of
outputs/ works. Runs are grouped by the config's `name` (the experiment) and summarised over their `seed`s: each
cell is `mean ± std` over the runs (sample std; "—" when one run, or no run has the value; "(k/n)" when only k of
the n runs have it).

Columns (val = the run's validation split, from history.jsonl / train_summary.json; test = evaluate.py's
metrics.json in <run>/evaluate/, written by `python evaluate.py ckpt=<run>/checkpoints/best.pt
hydra.run.dir=<run>/evaluate`, stage `post` = the configured post-processing):
  val/tumor_dice_post at the best epoch (the epoch best.pt was saved), post-processed, per-case mean
  val/tumor_dice, val/tumor_dice_global, val/liver_dice at the last epoch (raw: threshold only)
  train_summary.json minutes
  metrics.json post.tumor_dice_per_case, .tumor_dice_global, .liver_dice_per_case, .tumor_lesion_recall_iou50
each headed by the metric's words (lits.core.vocabulary) and where it comes from (@best, @last, test).

Epochs are numbered from 1, as train.py numbers them in history.jsonl and train_summary.json.

Rows: bce, dice, hybrid, progressive (the order of the published LiTS2017 loss ablation), then the other experiments
alphabetically. The table goes to stdout; --out DIR also writes DIR/results.md (table, column legend, list of runs)
and DIR/curves.png (validation tumour Dice post per epoch, mean and min-max band over seeds; the alpha schedule below
it).
Exit 2 with one `error: ...` line when a DIR is missing or holds no finished runs.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from lits.core.vocabulary import heading

ABLATION_ORDER = ["bce", "dice", "hybrid", "progressive"]
EVAL_STAGE = "post"
# (source, key): source "best" = history record at the best epoch, "last" = last validated record,
# "summary" = train_summary.json, "test" = metrics.json[EVAL_STAGE]
SOURCES = [
    ("best", "val/tumor_dice_post"),
    ("last", "val/tumor_dice"),
    ("last", "val/tumor_dice_global"),
    ("last", "val/liver_dice"),
    ("summary", "minutes"),
    ("test", "tumor_dice_per_case"),
    ("test", "tumor_dice_global"),
    ("test", "liver_dice_per_case"),
    ("test", "tumor_lesion_recall_iou50"),
]


def column_heading(source: str, key: str) -> str:
    """The metric's words from lits.core.vocabulary, and where the value comes from."""
    if source == "summary":
        return "train min"
    return f"val {heading(key)} @{source}" if source in ("best", "last") else f"test {heading(key)}"


COLUMNS = [(column_heading(source, key), source, key) for source, key in SOURCES]
LEGEND = {
    "best": "validation split, history.jsonl `{key}` at the best epoch "
    "(train_summary.json best_epoch, the epoch of best.pt)",
    "last": "validation split, history.jsonl `{key}` at the last validated epoch "
    "(raw: thresholded, no post-processing)",
    "summary": "train_summary.json `{key}` (training wall time, validation included)",
    "test": "test split, `<run>/evaluate/metrics.json` stage `"
    + EVAL_STAGE
    + "` (configured post-processing), `{key}`",
}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def read_history(path: Path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
    return records


def shown(path: Path) -> str:
    """A run folder as results.md names it: relative to the working folder when inside it (the file moves with it)."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


parser = argparse.ArgumentParser(
    prog="compare_runs.py",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog="Example: python train.py -m experiment=bce,dice,hybrid,progressive seed=0,1,2 && "
    "python scripts/compare_runs.py outputs/multirun/<time> --out outputs/comparison",
)
parser.add_argument(
    "dirs",
    nargs="+",
    metavar="DIR",
    type=Path,
    help="folders searched recursively for run folders (.hydra/config.yaml + history.jsonl + train_summary.json)",
)
parser.add_argument("--out", type=Path, metavar="DIR", help="also write DIR/results.md and DIR/curves.png")
args = parser.parse_args()

# ---- find the runs
run_dirs: list[Path] = []
unfinished: list[Path] = []
for folder in args.dirs:
    if not folder.is_dir():
        fail(f"{folder}: folder not found; give folders holding training runs (e.g. outputs/multirun/<time>)")
    found = sorted({p.parent.parent.resolve() for p in folder.rglob(".hydra/config.yaml")})
    finished = [d for d in found if (d / "history.jsonl").is_file() and (d / "train_summary.json").is_file()]
    unfinished += [d for d in found if (d / "history.jsonl").is_file() and d not in finished]
    if not finished:
        fail(
            f"{folder}: no finished training runs below it (a run folder holds .hydra/config.yaml, history.jsonl and "
            "train_summary.json); point at a train.py run or multirun folder"
        )
    run_dirs += [d for d in finished if d not in run_dirs]
for d in unfinished:
    print(f"note: {d}: no train_summary.json (unfinished or stopped run), left out", file=sys.stderr)

# ---- read them
from omegaconf import OmegaConf  # noqa: E402  (after --help and the folder checks: they stay fast)

from lits.core.tables import format_table  # noqa: E402

runs = []
for d in run_dirs:
    config = OmegaConf.load(d / ".hydra/config.yaml")
    history = read_history(d / "history.jsonl")
    summary = json.loads((d / "train_summary.json").read_text())
    validated = [r for r in history if "val/tumor_dice" in r]
    best_epoch = summary.get("best_epoch", 0)  # epochs numbered from 1; 0: never validated
    at_best = next((r for r in validated if r["epoch"] == best_epoch), None)
    if at_best is None and validated:  # no best recorded (e.g. monitor never finite): the best post Dice seen
        at_best = max(validated, key=lambda r: finite(r.get("val/tumor_dice_post")) or -math.inf)
    test, test_split = {}, None
    metrics_path = d / "evaluate" / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        test_split = metrics.get("split")
        if test_split == "test" and isinstance(metrics.get(EVAL_STAGE), dict):
            test = metrics[EVAL_STAGE]
        else:
            print(
                f"note: {metrics_path}: split {test_split}, stage {EVAL_STAGE} "
                f"{'present' if EVAL_STAGE in metrics else 'missing'}; not counted as test results",
                file=sys.stderr,
            )
    sources = {"best": at_best or {}, "last": validated[-1] if validated else {}, "summary": summary, "test": test}
    values = {column: finite(sources[source].get(key)) for column, source, key in COLUMNS}
    runs.append(
        {
            "dir": d,
            "name": str(config.get("name")),
            "seed": config.get("seed"),
            "values": values,
            "history": history,
            "epochs": len(history),
            "best_epoch": best_epoch,
            "evaluated": bool(test),
        }
    )

# ---- group and summarise
names = sorted(
    {r["name"] for r in runs},
    key=lambda n: (ABLATION_ORDER.index(n) if n in ABLATION_ORDER else len(ABLATION_ORDER), n),
)
groups = {n: sorted((r for r in runs if r["name"] == n), key=lambda r: (str(r["seed"]), str(r["dir"]))) for n in names}


def cell(values: list[float | None], digits: int) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "—"
    mean = statistics.fmean(present)
    std = f"{statistics.stdev(present):.{digits}f}" if len(present) > 1 else "—"
    partial = f" ({len(present)}/{len(values)})" if len(present) < len(values) else ""
    return f"{mean:.{digits}f} ± {std}{partial}"


header = ["experiment", "runs", "seeds"] + [c for c, _, _ in COLUMNS]
rows = []
for name, members in groups.items():
    seeds = sorted(
        {r["seed"] for r in members}, key=lambda s: (not isinstance(s, int), s if isinstance(s, int) else 0, str(s))
    )
    row = [name, str(len(members)), ",".join(str(s) for s in seeds)]
    row += [cell([r["values"][c] for r in members], 2 if source == "summary" else 4) for c, source, _ in COLUMNS]
    rows.append(dict(zip(header, row)))
table = format_table(rows, header)
print(table)

if args.out is None:
    sys.exit(0)

# ---- results.md
out = args.out
out.mkdir(parents=True, exist_ok=True)
lines = [
    "# Run comparison",
    "",
    f"{len(runs)} finished runs below {', '.join(f'`{d}`' for d in args.dirs)}, "
    "grouped by experiment (`name`); cells are mean ± sample std over the runs (— : one run or no value; "
    "(k/n): only k of n runs have the value).",
    "",
    table,
    "",
    "## Columns",
    "",
]
lines += [f"- **{column}**: " + LEGEND[source].format(key=key) for column, source, key in COLUMNS]
lines += [
    "",
    "![validation tumour Dice and alpha per epoch](curves.png)",
    "",
    "## Runs",
    "",
    "| experiment | seed | epochs | best epoch | test evaluated | run folder |",
    "|---|---|---|---|---|---|",
]
for name, members in groups.items():
    lines += [
        f"| {name} | {r['seed']} | {r['epochs']} | {r['best_epoch']} | "
        f"{'yes' if r['evaluated'] else 'no'} | `{shown(r['dir'])}` |"
        for r in members
    ]
(out / "results.md").write_text("\n".join(lines) + "\n")

# ---- curves.png
import matplotlib  # noqa: E402
import matplotlib.ticker  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5), gridspec_kw={"height_ratios": [2, 1]})
colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
for k, (name, members) in enumerate(groups.items()):
    color = colors[k % len(colors)]
    for panel, key in ((top, "val/tumor_dice_post"), (bottom, "train/alpha")):
        by_epoch: dict[int, list[float]] = {}
        for r in members:
            for record in r["history"]:
                value = finite(record.get(key))
                if value is not None:
                    by_epoch.setdefault(int(record["epoch"]), []).append(value)
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        mean = [statistics.fmean(by_epoch[e]) for e in epochs]
        panel.plot(epochs, mean, "o-", color=color, markersize=3, label=f"{name} (n={len(members)})")
        if len(members) > 1:
            panel.fill_between(
                epochs,
                [min(by_epoch[e]) for e in epochs],
                [max(by_epoch[e]) for e in epochs],
                color=color,
                alpha=0.2,
                linewidth=0,
            )
low, high = top.get_ylim()
top.set_ylim(max(low, -0.02), min(high, 1.02))
top.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
top.set_ylabel("val tumour Dice (post)")
top.set_title("validation tumour Dice per epoch: mean over seeds, band min–max")
top.grid(alpha=0.3)
top.legend(fontsize=8)
bottom.set_ylabel("alpha (Dice weight)")
bottom.set_xlabel("epoch")
bottom.set_ylim(-0.05, 1.05)
bottom.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(out / "curves.png", dpi=120)
plt.close(fig)
print(f"wrote {out / 'results.md'} and {out / 'curves.png'}", file=sys.stderr)
