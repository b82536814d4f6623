"""What evaluate.py writes besides the CSV/JSON tables: report.md, montages, the Dice-vs-volume plot, TensorBoard."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from lits.core.files import write_bytes_atomic
from lits.core.tables import format_table
from lits.core.vocabulary import VALIDATION, decimals, heading
from lits.evaluate.curves import progress_png
from lits.evaluate.headline import cases, counting_notes, on_off
from lits.evaluate.metrics.keys import LARGE
from lits.evaluate.pictures import error_slices, montage_png
from lits.infer.export import (
    export_labels,
    export_probabilities,
    orientation_from_meta,
    output_name,
    probability_name,
    read_header,
)

log = logging.getLogger(__name__)

# per-case table printed and put in report.md (cases.csv has every metric)
CASE_COLUMNS = [
    "case",
    "liver_dice",
    "tumor_dice",
    "tumor_volume_ref_ml",
    "tumor_volume_pred_ml",
    "tumor_assd",
    "tumor_lesions_ref",
    "tumor_lesion_tp_iou50",
    "tumor_lesion_fp_iou50",
    "tumor_burden_ref",
    "tumor_burden_pred",
]


# rows of the stage table (metrics.json has every aggregate)
SUMMARY_KEYS = [
    "liver_dice_per_case",
    "liver_dice_global",
    "liver_voe_mean",
    "liver_rvd_mean",
    "liver_assd_mean",
    "liver_msd_mean",
    "liver_rmsd_mean",
    "tumor_dice_per_case",
    "tumor_dice_global",
    "tumor_voe_mean",
    "tumor_rvd_mean",
    "tumor_assd_mean",
    "tumor_msd_mean",
    "tumor_rmsd_mean",
    "tumor_assd_sentinel_cases",
    "tumor_lesion_precision_iou50",
    "tumor_lesion_recall_iou50",
    "tumor_lesion_precision_iou0",
    "tumor_lesion_recall_iou0",
    "tumor_burden_rmse",
    "tumor_burden_max_abs_error",
]


# the console's tables: (key, heading) pairs, each table no wider than 120 characters (the burden columns: report.md)
CONSOLE_CASE_COLUMNS = [(key, heading(key, short=True)) for key in CASE_COLUMNS if not key.startswith("tumor_burden")]
CONSOLE_STAGE_COLUMNS = [
    (key, heading(key, short=True))
    for key in ("stage", "liver_dice_per_case", "tumor_dice_per_case", "tumor_dice_global", "tumor_assd_mean",
                "tumor_lesion_recall_iou50", "tumor_lesion_precision_iou50")
]  # fmt: skip
# The headline scalars evaluate.py logs to TensorBoard: (summary key, the tag training's validation logs the same
# metric of the post-processed stage under), so that a test or validation evaluation (a sibling run in TensorBoard,
# tensorboard/evaluate/<split>) draws its point on the validation curves.
TENSORBOARD_SCALARS = [(key, tag) for tag, (stage, key) in VALIDATION.items() if stage == "post"]
NOT_AVAILABLE = (
    "n/a: no surface distance or burden where the reference or the prediction is empty "
    f"(the LiTS scorer's {LARGE:g}, kept in cases.csv and ablation_cases.csv)"
)


def cell(key: str, value) -> str:
    """One table cell: the 9001 sentinel as n/a, Dice and rates with 3 decimals, volumes and distances with 1."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str) or isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(value)
    value = float(value)
    if value == LARGE:
        return "n/a"
    return f"{value:.{decimals(key)}f}" if math.isfinite(value) else "-"


def text_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table (also readable in a terminal) of `rows` with cells formatted by `cell`."""
    shown = [{heading: cell(key, row.get(key)) for key, heading in columns} for row in rows]
    return format_table(shown, [heading for _, heading in columns])


def has_sentinel(rows: list[dict], keys) -> bool:
    return any(isinstance(row.get(k), (int, float)) and float(row[k]) == LARGE for row in rows for k in keys)


def case_outputs(cfg, out_dir: Path, source, case, label, pred, probs, row) -> None:
    """Montage of the main stage and, with save_predictions, the exported NIfTI files."""
    report = cfg.report
    if report.montages:
        slices = error_slices(pred, label, report.montage_slices)
        title = (
            f"case {case.case_id} ({source.main}): liver Dice {row['liver_dice']:.3f}, "
            f"tumour Dice {row['tumor_dice']:.3f}"
        )
        images = case.to_native(np.asarray(case.image[slices], dtype=np.float32), order=1)
        tumor_prob = None if probs is None else probs[1][slices]
        png = montage_png(
            images, label[slices], pred[slices], slices, title, report.crop_margin, tumor_prob, source.window
        )
        write_bytes_atomic(out_dir / "montages" / f"case-{case.case_id}.png", png)
    if cfg.save_predictions and source.main != "given":
        image_path = source.image_paths.get(case.case_id)  # None: the CT is not known (header from the affine)
        header = read_header(image_path)
        # lits naming from the case id (the number in the file name, whatever the data layout)
        name = (
            f"test-segmentation-{case.case_id}.nii"
            if cfg.naming == "lits" or image_path is None
            else output_name(image_path, cfg.naming)
        )
        orientation = orientation_from_meta(case.meta["orientation"])
        export_labels(out_dir / "predictions" / name, pred, orientation, header)
        if cfg.save_probabilities and probs is not None:
            export_probabilities(out_dir / "predictions" / probability_name(name), probs, orientation, header)


def training_picture(out_dir: Path, training) -> str | None:
    """training_progress.png: the learning curves of the checkpoint's run, its epoch marked; the file name or None."""
    if training is None:
        return None
    title = f"training run {training.run_dir.name}: learning curves (the scored checkpoint is epoch {training.epoch})"
    write_bytes_atomic(
        out_dir / "training_progress.png", progress_png(training.history, training.best, training.epoch, title)
    )
    return "training_progress.png"


def tensorboard_dir(setting, default_root: Path | None, split: str) -> Path | None:
    """tensorboard_dir: null = off; auto = <the checkpoint's run>/tensorboard/evaluate/<split> when that run's
    tensorboard/ folder exists (a run of its own beside the training's `train`); a path = there."""
    if setting is None:
        return None
    if setting == "auto":
        return default_root / "evaluate" / split if default_root is not None and default_root.is_dir() else None
    return Path(setting)


def log_tensorboard(log_dir: Path, step: int, main: dict, stage: str, tables: dict[str, str], split: str) -> None:
    """The main stage's headline scalars at the checkpoint's epoch, under the tags of training's validation curves
    (TENSORBOARD_SCALARS; `log_dir` is a run of its own, evaluate/<split>, so TensorBoard overlays the two), and the
    tables as text (<split>/stages, <split>/cases); everything else is in metrics.json. `stage`: the main stage's name
    (post, or given for a predictions folder), which the tags leave out."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for key, tag in TENSORBOARD_SCALARS:
            value = main.get(key)
            if value is not None and math.isfinite(value):
                writer.add_scalar(tag, value, step)
        for name, table in tables.items():
            writer.add_text(f"{split}/{name}", table, step)
    log.info("headline metrics logged to TensorBoard in %s (step = epoch %d)", log_dir, step)


def training_sentence(training) -> str:
    """Which epoch was scored, which one best.pt holds and its validation numbers (history.jsonl)."""
    text = f"Run `{training.run_dir}`; the scored checkpoint is epoch {training.epoch}."
    best = training.best
    if best and best.get("epoch"):
        record = next((r for r in training.history if r["epoch"] == best["epoch"]), {})
        shown = ", ".join(f"{k} {v:.3f}" for k, v in record.items() if k.startswith("val/"))
        text += f" The run's best.pt is epoch {best['epoch']} (highest `{best['metric']}`" + (
            f"; validation there: {shown})." if shown else ")."
        )
    return text


SIZE_BIN_LABELS = {"under10mm": "< 10 mm", "10to20mm": "10-20 mm", "over20mm": "> 20 mm"}
SIZE_BIN_COLUMNS = [
    ("size", "lesion size (equivalent diameter)"),
    ("lesions", "reference lesions"),
    ("recall50", "found, IoU > 0.5"),
    ("recall0", "found, IoU > 0"),
    ("dice", "mean lesion Dice"),
]


def size_bin_rows(stage: dict) -> list[dict]:
    """Lesion finding by reference lesion size (a stage's aggregate): one row per bin, None where a bin is empty."""
    if "tumor_lesion_ref_under10mm" not in stage:
        return []
    return [
        {
            "size": label,
            "lesions": int(stage[f"tumor_lesion_ref_{b}"]),
            "recall50": stage[f"tumor_lesion_recall_iou50_{b}"],
            "recall0": stage[f"tumor_lesion_recall_iou0_{b}"],
            "dice": stage[f"tumor_lesion_dice_{b}"],
        }
        for b, label in SIZE_BIN_LABELS.items()
    ]


def lesion_markdown(result: dict, stage: str, pictures: dict[str, str | None]) -> list[str]:
    """report.md's lesion-finding section: the size-bin table, the detection curve, the tuning (when done here)."""
    rows = size_bin_rows(result[stage])
    lines = ["## Lesion finding", ""] if rows or pictures.get("detection_curve") else []
    if rows:
        lines += [f"Stage `{stage}`, reference lesions by equivalent diameter (the scorer's matching):", ""]
        lines += [text_table(rows, SIZE_BIN_COLUMNS), ""]
    if pictures.get("detection_curve"):
        lines += ["Lesion recall against false positives per case as the tumour threshold moves:", ""]
        lines += [f"![lesion detection curve]({pictures['detection_curve']})", ""]
    if pictures.get("reliability"):
        lines += [
            "## Tuning on this split",
            "",
            "Calibration and post-processing were chosen here and stored in the "
            "checkpoint (`tuning.md` ranks the candidates). Reliability before and after calibration:",
            "",
            f"![reliability diagram]({pictures['reliability']})",
            "",
        ]
    return lines


def full_stage_table(summary: dict[str, dict]) -> str:
    """Every SUMMARY_KEYS aggregate (rows) of every stage (columns), for report.md, report.html and TensorBoard."""
    rows = [
        {"metric": key, **{stage: cell(key, values.get(key)) for stage, values in summary.items()}}
        for key in SUMMARY_KEYS
    ]
    return format_table(rows, ["metric", *summary])


def describe_source(result: dict) -> str:
    if result["mode"] != "checkpoint":
        return f"predictions `{result['predictions']}` against references `{result['references']}`"
    return f"checkpoint `{result['ckpt']}` (epoch {result['trained_epochs']}), split `{result['split']}`" + (
        ", flip TTA" if result.get("tta") else ""
    )


def markdown(result: dict, source, tables: dict[str, str], pictures: dict[str, str | None], report) -> str:
    """report.md: the headline, the tables, the pictures. `tables`: stages (full), cases; `pictures`: file names
    of dice_volume, training (None when not drawn)."""
    lines = [
        "# LiTS evaluation",
        "",
        f"**{result['headline']}**",
        "",
        f"{describe_source(result)}; {cases(result['num_cases'])}. The same with sortable tables: `report.html`.",
        "",
        *[f"- {note}" for note in counting_notes(result)],
        "",
        "Metrics follow the official LiTS scorer (lits/evaluate/metrics/): Dice per case (mean) and global; "
        "surface distances in mm, averaged over cases where both masks are non-empty "
        f"(`*_sentinel_cases` counts the others); lesion detection at IoU > 0.5 and > 0. {NOT_AVAILABLE}.",
        "",
        "## Stages",
        "",
    ]
    lines += [f"- `{name}`: {description}" for name, description in source.stages]
    if result["mode"] == "checkpoint":
        post = ", ".join(f"{k}={on_off(v)}" for k, v in result["postprocess"].items())
        lines += [
            "",
            "The pipeline as applied: each stage adds the next step the configuration switches on, `post` (all of "
            f"them) last; `post+<step>` rows are candidates, `post` with one step it leaves off. `postprocess.*`: "
            f"{post}.",
        ]
    lines += ["", "## Aggregates per stage", "", tables["stages"], "", f"## Cases (stage `{source.main}`)", ""]
    lines += [
        tables["cases"],
        "",
        "Every metric per case: `cases.csv`"
        + (" and `ablation_cases.csv` (all stages)" if len(source.stages) > 1 else "")
        + "; all aggregates: `metrics.json`.",
        "",
    ]
    lines += lesion_markdown(result, source.main, pictures)
    if pictures["training"]:
        lines += ["## Training", "", training_sentence(source.training), ""]
        lines += [f"![learning curves of the training run]({pictures['training']})", ""]
    if pictures["dice_volume"]:
        lines += [
            "## Tumour Dice against tumour volume",
            "",
            f"![tumour Dice vs volume]({pictures['dice_volume']})",
            "",
        ]
    if report.montages:
        lines += [
            "## Slices with the largest tumour error",
            "",
            "Cases with the most wrong tumour voxels first. Each row: "
            "the CT (HU window and orientation marked; radiological view, the patient's right on the left), "
            "the errors (tumour: yellow correct, cyan missed, red extra; liver: green tint correct, violet missed, "
            "orange extra) and the tumour probability with the reference tumour outlined.",
            "",
        ]
        lines += [f"![case {cid}](montages/case-{cid}.png)" for cid in result["montage_order"]]
        lines.append("")
    return "\n".join(lines)
