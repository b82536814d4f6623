"""Voxel-count metrics: Dice and the overlap counts behind global Dice, VOE, RVD and tumour burden."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lits.evaluate.metrics.keys import COUNT_KEYS, GLOBAL_DICE, LARGE

# Voxels per slab when counting (about 2 M: a few slabs of 512x512 fit comfortably in L2/L3 as bool temps).
_SLAB_VOXELS = 1 << 21


def dice(pred: np.ndarray, ref: np.ndarray, empty_score: float) -> float:
    """Dice ``2|P & G| / (|P| + |G|)`` of two boolean masks; ``empty_score`` when both are empty.

    Non-boolean inputs are read as ``!= 0``. Raises ValueError if the shapes differ.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"dice: shapes differ, prediction {pred.shape} vs reference {ref.shape}")
    pred = pred if pred.dtype == bool else pred != 0
    ref = ref if ref.dtype == bool else ref != 0
    inter = int(np.count_nonzero(pred & ref))
    return dice_from_counts(inter, int(np.count_nonzero(pred)), int(np.count_nonzero(ref)), empty_score)


def dice_from_counts(intersection: int, pred_voxels: int, ref_voxels: int, empty_score: float) -> float:
    """Dice from voxel counts; ``empty_score`` when ``pred_voxels + ref_voxels == 0``."""
    denom = int(pred_voxels) + int(ref_voxels)
    if denom == 0:
        return float(empty_score)
    return 2.0 * int(intersection) / denom


def overlap_counts(pred_label: np.ndarray, ref_label: np.ndarray) -> dict[str, int]:
    """Raw int64 voxel counts for liver (label >= 1) and tumour (label == 2): intersection, pred, ref.

    Counts slab by slab along the first axis (bounded memory, cache friendly; ~10x faster than
    whole-volume boolean temporaries on 512x512x300).
    """
    pred_label = np.atleast_1d(pred_label)
    ref_label = np.atleast_1d(ref_label)
    counts = np.zeros(6, dtype=np.int64)
    per_slice = max(1, int(np.prod(pred_label.shape[1:], dtype=np.int64)))
    step = max(1, _SLAB_VOXELS // per_slice)
    for z in range(0, pred_label.shape[0], step):
        p = pred_label[z : z + step]
        r = ref_label[z : z + step]
        lp = p >= 1
        lr = r >= 1
        tp = p == 2
        tr = r == 2
        counts += (
            np.count_nonzero(lp & lr),
            np.count_nonzero(lp),
            np.count_nonzero(lr),
            np.count_nonzero(tp & tr),
            np.count_nonzero(tp),
            np.count_nonzero(tr),
        )
    return dict(zip(COUNT_KEYS, (int(c) for c in counts)))


def relative_volume_difference(pred_voxels: int, ref_voxels: int) -> float:
    """``(|P| - |G|) / |G|``; ``LARGE`` if either is empty (the scorer's rule for an empty mask)."""
    if pred_voxels == 0 or ref_voxels == 0:
        return LARGE
    return (int(pred_voxels) - int(ref_voxels)) / int(ref_voxels)


def volume_overlap_error(dice_score: float) -> float:
    """``VOE = 1 - Jaccard``, with ``Jaccard = Dice / (2 - Dice)`` as in the scorer."""
    return 1.0 - dice_score / (2.0 - dice_score)


def tumor_burden(liver_voxels: int, tumor_voxels: int) -> float:
    """``tumour / liver incl. tumour`` voxels; ``LARGE`` when there is no liver (the scorer's rule)."""
    return LARGE if liver_voxels == 0 else int(tumor_voxels) / int(liver_voxels)


def overlap_metrics(pred_label: np.ndarray, ref_label: np.ndarray) -> dict[str, float]:
    """Dice for liver and tumour with the LiTS empty-mask conventions, plus the counts for global Dice."""
    c = overlap_counts(pred_label, ref_label)
    out: dict[str, float] = {}
    for s, empty in GLOBAL_DICE.items():
        # One empty mask gives 0 by the formula; both empty gives the structure's empty score
        # (liver 0.0: the scorer's `liver_exists` test fails; tumour 1.0).
        out[f"{s}_dice"] = dice_from_counts(c[f"{s}_intersection"], c[f"{s}_pred_voxels"], c[f"{s}_ref_voxels"], empty)
    out.update(c)
    return out


def burden_metrics(overlap: Mapping[str, float]) -> dict[str, float]:
    """Predicted and reference tumour burden and ``ref - pred`` from the `overlap_metrics` counts in ``overlap``;
    the error is ``LARGE`` when either burden is."""
    pred = tumor_burden(int(overlap["liver_pred_voxels"]), int(overlap["tumor_pred_voxels"]))
    ref = tumor_burden(int(overlap["liver_ref_voxels"]), int(overlap["tumor_ref_voxels"]))
    err = LARGE if LARGE in (pred, ref) else ref - pred
    return {"tumor_burden_pred": pred, "tumor_burden_ref": ref, "tumor_burden_error": err}
