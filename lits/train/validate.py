"""Validation during training: whole validation volumes through the same predictor, post-processing and metrics
that evaluate.py uses, so the numbers a run selects best.pt by are the numbers evaluate.py reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from lits.core.vocabulary import validation_metrics
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


def size_bin_metrics(summary: dict) -> dict[str, float]:
    """Dice per lesion size bin of the post-processed stage, for the bins with lesions only (the other validation
    metrics: `lits.core.vocabulary.validation_metrics`)."""
    out = {}
    for name in SIZE_BINS:
        if summary[f"tumor_lesion_ref_{name}"]:
            out[f"val/lesion_dice_{name}"] = summary[f"tumor_lesion_dice_{name}"]
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
        **validation_metrics({"raw": raw_summary, "post": post_summary}),
        **size_bin_metrics(post_summary),
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
