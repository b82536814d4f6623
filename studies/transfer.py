"""Transfer check: does post-processing move lesion finding on the phantom the way it moved it on a real CT?

On a real multi-focal liver CT (one LiTS volume cut in two halves; the default recipe trained on one half, scored on
the other, both ways) the same two checkpoints gave, against the default post-processing:
  * no size filter: tumour Dice unchanged, lesion recall at IoU > 0.5 up (+0.04 / +0.04), precision down
    (-0.32 / -0.20); recall at any overlap 0.85 / 0.76;
  * hysteresis + keep_confident=0.8: tumour Dice up (+0.006 / +0.031), recall at IoU > 0.5 up (+0.04 / +0.21) at
    about equal precision (-0.23 / +0.15).
A phantom on which decisions about small lesions transfer has to move the same way. This scores each checkpoint on
its validation split under the three settings and writes transfer.md: every checkpoint's row, per setting the
change against the default (mean ± sample std over the checkpoints), and how the reference lesions were outlined
(studies/outlines.py: found with IoU > 0.5, too small, too large, merged, missed; only "too small" can gain from
hysteresis).

    python -m studies transfer outputs/lesion_study_8min/{baseline,per_lesion}/seed*/checkpoints/last.pt

The checkpoints must be untuned (a run with tune_after=false, and not passed through evaluate.py tune=true): tuned
calibration would change what every threshold means. An evaluation already in --out is not redone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from lits.core.compose import CHECKOUT as REPO
from lits.core.errors import LitsError
from lits.core.tables import format_table
from lits.infer.checkpoint import load_checkpoint
from studies.outlines import CLASSES, LEFT_OUT, LOW, REACHABLE, SMALL, case_labels, split_outlines
from studies.recipe import mean_std, run

SETTINGS = {  # name -> evaluate.py postprocess overrides
    "default": [],
    "no size filter": ["postprocess.min_tumor_voxels=0", "postprocess.min_tumor_mm3=0"],
    "hysteresis + keep_confident 0.8": ["postprocess.hysteresis=true", "postprocess.keep_confident=0.8"],
}
MEASURES = {  # column -> key of metrics.json's post-processed stage
    "tumour Dice / case": "tumor_dice_per_case",
    "recall IoU > 0.5": "tumor_lesion_recall_iou50",
    "precision IoU > 0.5": "tumor_lesion_precision_iou50",
    "recall any overlap": "tumor_lesion_recall_iou0",
    "recall < 10 mm": "tumor_lesion_recall_iou50_under10mm",
}
REACH_COLUMN = f"too small: voxels left out with p >= {LOW:g}"
QUIET = ["progress=false", "tensorboard_dir=null", "ablation=false", "detection_curve=false",
         "report.montages=false", "report.plot=false", "save_predictions=true", "save_probabilities=true"]  # fmt: skip


def label(ckpt: Path) -> str:
    """A checkpoint's short name: its run folder's last two parts and the file (per_lesion/seed0/last.pt)."""
    run_folder = ckpt.resolve().parent.parent
    return f"{run_folder.parent.name}/{run_folder.name}/{ckpt.name}"


def refuse_tuned(ckpt: Path) -> dict:
    """`ckpt`'s state; exit with one line if it is not a readable checkpoint or is tuned."""
    try:
        state = load_checkpoint(ckpt)
    except LitsError as exc:
        raise SystemExit(f"error: {exc}") from None
    if "tuning" in state:
        raise SystemExit(
            f"error: {ckpt} is tuned on validation (calibration and post-processing stored in it); the check needs "
            "the network's own probabilities: give a checkpoint of a run with tune_after=false"
        )
    return state


def references(state: dict) -> tuple[dict[str, Path], list[str]]:
    """What the outline classes of a checkpoint's validation split are scored against: (case id -> segmentation
    file, from its own data config; the validation case ids)."""
    return case_labels(state["config"]["data"]), state["splits"]["val"]


def evaluate(ckpt: Path, reference: tuple[dict[str, Path], list[str]], setting: str, out: Path) -> dict:
    """`ckpt` on its validation split under `setting` (cached in `out`): the post-processed stage's metrics, and
    under "outlines" its reference lesions (`references`) per outline class."""
    folder = out / label(ckpt).replace("/", "__").removesuffix(".pt") / setting.replace(" ", "_")
    if not (folder / "metrics.json").exists() or not any((folder / "predictions").glob("*_probabilities.nii.gz")):
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "evaluate.py", f"ckpt={ckpt.resolve()}", "split=val", *QUIET, *SETTINGS[setting],
               f"hydra.run.dir={folder}"]  # fmt: skip
        seconds = run(cmd, folder.parent / f"{setting.replace(' ', '_')}.log")
        print(f"[{label(ckpt)}] {setting}: {seconds:.0f} s", flush=True)
    outlines = split_outlines(folder / "predictions", *reference)
    return {**json.loads((folder / "metrics.json").read_text())["post"], "outlines": outlines}


def report(results: dict[str, dict[str, dict]]) -> str:
    """Every checkpoint's row per setting, then each setting's change against the default over the checkpoints."""
    rows = [{"checkpoint": name, "setting": setting, **{c: f"{post[k]:.3f}" for c, k in MEASURES.items()}}
            for name, by_setting in results.items() for setting, post in by_setting.items()]  # fmt: skip
    deltas = []
    for setting in list(SETTINGS)[1:]:
        row = {"setting": setting, "checkpoints": len(results)}
        for column, key in MEASURES.items():
            row[column] = mean_std([r[setting][key] - r["default"][key] for r in results.values()], signed=True)
        deltas.append(row)
    return (
        "### each checkpoint, validation split\n\n" + format_table(rows, ["checkpoint", "setting", *MEASURES])
        + "\n\n### change against the default post-processing (setting - default, same checkpoint), mean ± sd\n\n"
        + format_table(deltas, ["setting", "checkpoints", *MEASURES])
        + "\n\n### how the reference lesions were outlined, all checkpoints together (count, share)\n\n"
        + format_table(outline_rows(results), ["setting", "lesions", *CLASSES, REACH_COLUMN])
        + "\n\n### the same for the lesions under 10 mm\n\n"
        + format_table(outline_rows(results, SMALL), ["setting", "lesions", *CLASSES])
    )  # fmt: skip


def outline_rows(results: dict[str, dict[str, dict]], prefix: str = "") -> list[dict]:
    """Per setting, the reference lesions (those whose outline keys start with `prefix`) of every checkpoint's split
    per outline class; for all lesions also the reference voxels that too-small outlines left out, with how many of
    them hysteresis could reach."""
    rows = []
    for setting in SETTINGS:
        total = sum((r[setting]["outlines"] for r in results.values()), Counter())
        lesions = sum(total[prefix + c] for c in CLASSES)
        row = {"setting": setting, "lesions": str(lesions)}
        row.update({c: f"{total[prefix + c]} ({total[prefix + c] / max(lesions, 1):.0%})" for c in CLASSES})
        if not prefix:
            left_out = total[LEFT_OUT]
            row[REACH_COLUMN] = f"{total[REACHABLE]} of {left_out} ({total[REACHABLE] / max(left_out, 1):.0%})"
        rows.append(row)
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", nargs="+", type=Path, help="untuned checkpoints (best.pt / last.pt)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "transfer")


def main(args) -> None:
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        raise SystemExit(f"error: no checkpoint at {', '.join(missing)}; give paths to best.pt or last.pt files")
    # every checkpoint refused or read (once) before any evaluation runs; only its references are kept
    refs = {ckpt: references(refuse_tuned(ckpt)) for ckpt in args.checkpoints}
    out = args.out.resolve()
    results = {label(c): {s: evaluate(c, ref, s, out) for s in SETTINGS} for c, ref in refs.items()}
    text = "# Transfer check: post-processing on the validation split\n\n" + report(results) + "\n"
    (out / "transfer.md").write_text(text)
    print("\n" + text + f"\nwrote {out / 'transfer.md'}")
