"""Validation during training: whole validation volumes through the same predictor, post-processing and metrics
that evaluate.py uses, so the numbers a run selects best.pt by are the numbers evaluate.py reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lits.evaluate.metrics import aggregate, case_metrics
from lits.evaluate.pictures import comparison_grid
from lits.infer.postprocess import postprocess, probabilities_to_labels
from lits.infer.predictor import predict_volume
from lits.infer.spec import InferenceSpec

SHOWN_CASES = 4  # validation cases drawn into the TensorBoard overlay


@dataclass
class Validation:
    metrics: dict[str, float]  # val/liver_dice, val/tumor_dice (+ _global, _post)
    rows: list[dict]  # per-case Dice rows of the post-processed stage
    picture: np.ndarray | None  # (H, W, 3) overlay grid, or None


def validate(
    model: torch.nn.Module,
    cases: list,
    spec: InferenceSpec,
    device: torch.device,
    amp: str,
    batch_size: int,
    tta: bool,
    pictures: bool,
) -> Validation:
    """3D per-case Dice on whole validation volumes, raw and post-processed, plus an overlay picture.

    Under DDP only rank 0 calls this, on the unwrapped model: the numbers are those of a single-process evaluation
    of the same weights by construction (same code, same cases, same order, same batches).
    """
    raw_rows, post_rows, shown = [], [], []
    for case in cases:
        probs = predict_volume(model, case.image, device, batch_size, amp, tta=tta, **spec.predictor_settings())
        raw = probabilities_to_labels(probs[0], probs[1], spec.postprocess.threshold)
        image = case.image if spec.postprocess.crf else None
        post = postprocess(probs[0], probs[1], spec.postprocess, case.spacing, image)
        label = np.asarray(case.label)
        raw_rows.append({"case": case.case_id, **case_metrics(raw, label, case.spacing, detail="dice")})
        post_rows.append({"case": case.case_id, **case_metrics(post, label, case.spacing, detail="dice")})
        if pictures and len(shown) < SHOWN_CASES:
            z = int(np.argmax(case.stats["tumor_voxels"] + case.stats["liver_voxels"] * 1e-6))
            shown.append((np.asarray(case.image[z], np.float32), label[z], post[z]))
    raw_summary, post_summary = aggregate(raw_rows), aggregate(post_rows)
    metrics = {
        "val/liver_dice": raw_summary["liver_dice_per_case"],
        "val/tumor_dice": raw_summary["tumor_dice_per_case"],
        "val/tumor_dice_global": raw_summary["tumor_dice_global"],
        "val/liver_dice_post": post_summary["liver_dice_per_case"],
        "val/tumor_dice_post": post_summary["tumor_dice_per_case"],
        "val/tumor_dice_global_post": post_summary["tumor_dice_global"],
    }
    return Validation(metrics, post_rows, comparison_grid(*zip(*shown)) if shown else None)
