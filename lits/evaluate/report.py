"""What evaluate.py writes besides the CSV/JSON tables: report.md, montages, the Dice-vs-volume plot, TensorBoard."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from lits.core.files import write_bytes_atomic
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
        png = montage_png(images, label[slices], pred[slices], slices, title, report.crop_margin)
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


def tensorboard_dir(setting, default: Path | None) -> Path | None:
    """tensorboard_dir: null = off; auto = the checkpoint's training run's tensorboard/ folder when it exists
    (eval numbers land beside the training curves, at the checkpoint's epoch); a path = there."""
    if setting is None:
        return None
    if setting == "auto":
        return default if default is not None and default.is_dir() else None
    return Path(setting)


def log_tensorboard(log_dir: Path, step: int, summary: dict, stage_table: str, split: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for stage, values in summary.items():
            for key in SUMMARY_KEYS:
                value = values.get(key)
                if value is not None and math.isfinite(value):
                    writer.add_scalar(f"eval_{split}/{stage}/{key}", value, step)
        writer.add_text(f"eval_{split}/stages", stage_table, step)
    log.info("evaluation metrics logged to TensorBoard in %s (step %d)", log_dir, step)


def markdown(result: dict, source, stage_table: str, case_table: str, report) -> str:
    what = (
        f"checkpoint `{result['ckpt']}`, split `{result['split']}`, {result['trained_epochs']} trained epochs"
        + (", flip TTA" if result.get("tta") else "")
        if result["mode"] == "checkpoint"
        else f"predictions `{result['predictions']}` against references `{result['references']}`"
    )
    lines = [
        "# LiTS evaluation",
        "",
        f"{what}; {result['num_cases']} cases.",
        "",
        "Metrics follow the official LiTS scorer (lits/evaluate/metrics/): Dice per case (mean) and global; "
        "surface distances in mm, averaged over cases where both masks are non-empty "
        "(`*_sentinel_cases` counts the others); lesion detection at IoU > 0.5 and > 0.",
        "",
        "## Stages",
        "",
    ]
    lines += [f"- `{name}`: {description}" for name, description in source.stages]
    if result["mode"] == "checkpoint":
        post = ", ".join(f"{k}={v}" for k, v in result["postprocess"].items())
        lines += [
            "",
            f"Cumulative ablation: each stage adds one step to the one before. `post` = `postprocess.*`: {post}.",
        ]
    lines += [
        "",
        "## Aggregates per stage",
        "",
        stage_table,
        "",
        f"## Cases (stage `{source.main}`)",
        "",
        case_table,
        "",
        "Every metric per case: `cases.csv`"
        + (" and `ablation_cases.csv` (all stages)" if len(source.stages) > 1 else "")
        + "; all aggregates: `metrics.json`.",
        "",
    ]
    if report.plot:
        lines += ["## Tumour Dice against tumour volume", "", "![tumour Dice vs volume](tumor_dice_vs_volume.png)", ""]
    if report.montages:
        lines += [
            "## Slices with the largest tumour error",
            "",
            "Rows: slices; columns: CT, reference outlines, prediction outlines (liver green, tumour red; "
            "radiological view: patient's right on the left).",
            "",
        ]
        lines += [f"![case {c.case_id}](montages/case-{c.case_id}.png)" for c in source.cases]
        lines.append("")
    return "\n".join(lines)
