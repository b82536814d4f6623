"""Validation during training: whole validation volumes through the same predictor, post-processing and metrics
that evaluate.py uses, so the numbers a run selects best.pt by are the numbers evaluate.py reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from lits.evaluate.metrics import SIZE_BINS, aggregate, case_metrics
from lits.evaluate.pictures import SliceView, validation_picture
from lits.infer.postprocess import postprocess, probabilities_to_labels
from lits.infer.predictor import predict_volume
from lits.infer.spec import InferenceSpec

SHOWN_CASES = 4  # validation cases drawn into the TensorBoard picture: those with the most wrong tumour voxels


@dataclass
class Validation:
    metrics: dict[str, float]  # val/liver_dice, val/tumor_dice (+ _global, _post), val/lesion_* (post-processed)
    rows: list[dict]  # per-case Dice rows of the post-processed stage
    picture: np.ndarray | None  # (H, W, 3) uint8 picture of the worst cases, or None


def lesion_metrics(summary: dict) -> dict[str, float]:
    """Lesion finding on the post-processed stage: recall and precision at IoU > 0.5 and > 0 (the scorer's matching),
    F1 at IoU > 0.5, Dice per lesion size bin (bins with lesions only), and val/lesion_score, the mean of tumour Dice
    per case and lesion F1 (a monitor that rewards finding lesions as much as outlining them)."""
    out = {}
    for t in ("iou50", "iou0"):
        out[f"val/lesion_recall_{t}"] = summary[f"tumor_lesion_recall_{t}"]
        out[f"val/lesion_precision_{t}"] = summary[f"tumor_lesion_precision_{t}"]
    recall, precision = out["val/lesion_recall_iou50"], out["val/lesion_precision_iou50"]
    out["val/lesion_f1_iou50"] = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    for name in SIZE_BINS:
        if summary[f"tumor_lesion_ref_{name}"]:
            out[f"val/lesion_dice_{name}"] = summary[f"tumor_lesion_dice_{name}"]
    out["val/lesion_score"] = (summary["tumor_dice_per_case"] + out["val/lesion_f1_iou50"]) / 2
    return out


def validate(
    model: torch.nn.Module,
    cases: list,
    spec: InferenceSpec,
    device: torch.device,
    amp: str,
    batch_size: int,
    tta: bool,
    pictures: bool,
    progress: bool = False,
) -> Validation:
    """3D per-case Dice on whole validation volumes, raw and post-processed, plus a picture of the SHOWN_CASES
    cases with the most wrong tumour voxels (largest first), each at its worst slice.

    Under DDP only rank 0 calls this, on the unwrapped model: the numbers are those of a single-process evaluation
    of the same weights by construction (same code, same cases, same order, same batches).
    """
    raw_rows, post_rows, shown = [], [], []
    for case in tqdm(cases, desc="validating", unit="case", leave=False, disable=not progress):
        views = spec.views(tta)
        probs = predict_volume(model, case.image, device, batch_size, amp, flips=views, **spec.predictor_settings())
        raw = probabilities_to_labels(probs[0], probs[1], spec.postprocess.threshold, spec.postprocess.tumor_threshold)
        image = case.image if spec.postprocess.crf else None
        post = postprocess(probs[0], probs[1], spec.postprocess, case.spacing, image)
        label = np.asarray(case.label)
        raw_rows.append({"case": case.case_id, **case_metrics(raw, label, case.spacing, detail="dice")})
        post_rows.append({"case": case.case_id, **case_metrics(post, label, case.spacing, detail="lesions")})
        if pictures:
            shown = _worst(shown, case, label, post, probs[1], post_rows[-1]["tumor_dice"])
    raw_summary, post_summary = aggregate(raw_rows), aggregate(post_rows)
    metrics = {
        "val/liver_dice": raw_summary["liver_dice_per_case"],
        "val/tumor_dice": raw_summary["tumor_dice_per_case"],
        "val/tumor_dice_global": raw_summary["tumor_dice_global"],
        "val/liver_dice_post": post_summary["liver_dice_per_case"],
        "val/tumor_dice_post": post_summary["tumor_dice_per_case"],
        "val/tumor_dice_global_post": post_summary["tumor_dice_global"],
        **lesion_metrics(post_summary),
    }
    picture = None
    if shown:
        which = f"the {len(shown)} cases" if len(shown) > 1 else "the case"
        title = f"validation, post-processed: {which} with the most wrong tumour voxels, worst first"
        picture = validation_picture([view for _, view in shown], title, spec.window)
    return Validation(metrics, post_rows, picture)


def _worst(shown: list, case, label: np.ndarray, post: np.ndarray, tumor_prob: np.ndarray, dice: float) -> list:
    """`shown` (error, SliceView) pairs with this case added at its worst slice, the SHOWN_CASES largest kept."""
    wrong = (post == 2) != (label == 2)
    per_slice = wrong.sum(axis=(1, 2))
    z = int(np.argmax(per_slice)) if per_slice.any() else int(np.argmax((label >= 1).sum(axis=(1, 2))))
    caption = f"case {case.case_id}, z={z}\ntumour Dice {dice:.3f}, {int(per_slice.sum())} voxels wrong"
    view = SliceView(np.asarray(case.image[z], np.float32), label[z], post[z], np.asarray(tumor_prob[z]), caption)
    shown = sorted([*shown, (int(per_slice.sum()), view)], key=lambda pair: -pair[0])
    return shown[:SHOWN_CASES]
