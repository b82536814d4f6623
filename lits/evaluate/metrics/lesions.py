"""Lesion detection as the scorer's ``detect_lesions``: reference lesions, matching with merge and split errors,
TP/FP/FN per IoU threshold, and lesion-wise segmentation scores (rules in the package docstring).

Predicted lesions come from `lits.infer.postprocess.predicted_lesions`, which prediction also uses to count
lesions, so both agree on what a lesion is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lits.evaluate.metrics.geometry import BOX_MARGIN, bounding_box
from lits.evaluate.metrics.keys import DETECTION_THRESHOLDS, LESION_SCORE_METRICS
from lits.evaluate.metrics.overlap import dice_from_counts, relative_volume_difference, volume_overlap_error
from lits.evaluate.metrics.surface import surface_metrics
from lits.infer.postprocess import predicted_lesions


def _axial_cross(ndim: int) -> np.ndarray:
    """4-neighbour cross in the last two axes, flat along the others (the scorer's in-plane dilation)."""
    k = min(2, ndim)
    plane = ndimage.generate_binary_structure(k, 1)
    return plane.reshape((1,) * (ndim - k) + plane.shape)


def reference_lesions(ref_tumor: np.ndarray) -> tuple[np.ndarray, int]:
    """Reference lesions as the scorer finds them: dilate the tumour mask by one voxel in-plane (4-neighbour
    cross over the last two axes), take 6-connected components, trim the labels back to the tumour mask."""
    ref_tumor = np.asarray(ref_tumor, dtype=bool)
    dilated = ndimage.binary_dilation(ref_tumor, structure=_axial_cross(ref_tumor.ndim))
    labels, n = ndimage.label(dilated)
    labels[~ref_tumor] = 0  # every component keeps >= 1 voxel: it grew from one
    return labels, int(n)


@dataclass(frozen=True)
class LesionGroup:
    """Reference lesions (merged) and the predictions matched to them, with their voxel counts."""

    ref_ids: tuple[int, ...]
    pred_ids: tuple[int, ...]
    intersection: int
    pred_voxels: int
    ref_voxels: int

    @property
    def iou(self) -> float:
        return self.intersection / (self.pred_voxels + self.ref_voxels - self.intersection)


@dataclass
class LesionMatch:
    """Result of `match_lesions`: component counts, ``tp``/``fp``/``fn`` per threshold name, merge and split
    errors, and every matched ``LesionGroup`` (detected at a threshold when ``group.iou > threshold``)."""

    n_ref: int
    n_pred: int
    thresholds: dict[str, float]
    tp: dict[str, int] = field(default_factory=dict)
    fp: dict[str, int] = field(default_factory=dict)
    fn: dict[str, int] = field(default_factory=dict)
    merge_errors: int = 0
    split_errors: int = 0
    groups: list[LesionGroup] = field(default_factory=list)

    def detected(self, name: str) -> list[LesionGroup]:
        return [g for g in self.groups if g.iou > self.thresholds[name]]


def match_lesions(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    thresholds: Mapping[str, float] | None = None,
) -> LesionMatch:
    """Port of the scorer's ``detect_lesions`` (see the package docstring) for several IoU thresholds at once.

    ``pred_labels``/``ref_labels``: integer component maps (0 = background) of the same shape, e.g. from
    `predicted_lesions` / `reference_lesions`.
    """
    thresholds = dict(DETECTION_THRESHOLDS if thresholds is None else thresholds)
    pred_labels = np.asarray(pred_labels)
    ref_labels = np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"match_lesions: shapes differ, {pred_labels.shape} vs {ref_labels.shape}")
    pred_sizes = np.bincount(pred_labels.ravel())
    ref_sizes = np.bincount(ref_labels.ravel())
    pred_all = np.flatnonzero(pred_sizes[1:]) + 1
    ref_ids = np.flatnonzero(ref_sizes[1:]) + 1
    zero = dict.fromkeys(thresholds, 0)
    out = LesionMatch(
        n_ref=len(ref_ids), n_pred=len(pred_all), thresholds=thresholds, tp=dict(zero), fp=dict(zero), fn=dict(zero)
    )
    if len(ref_ids) == 0:
        return out  # scorer: early return, TP = FP = FN = 0

    both = (pred_labels > 0) & (ref_labels > 0)
    p_vox = pred_labels[both]
    g_vox = ref_labels[both]
    p_ids = np.unique(p_vox)  # predictions touching a reference lesion
    n_isolated_fp = len(pred_all) - len(p_ids)
    P, G = len(p_ids), len(ref_ids)
    pi = np.searchsorted(p_ids, p_vox)
    gi = np.searchsorted(ref_ids, g_vox)
    full = np.bincount(pi * G + gi, minlength=P * G).reshape(P, G).astype(np.int64)

    # 1. Merge reference lesions spanned by one prediction: each column goes to the row overlapping it most.
    mat = full.copy()
    cols: list[list[int]] = [[int(g)] for g in ref_ids]  # reference members of each (merged) column
    col_src: list[list[int]] = [[j] for j in range(G)]  # original column indices, for the full matrix
    for i in range(P):
        sel = [j for j in np.flatnonzero(mat[i]) if int(np.argmax(mat[:, j])) == i]
        out.merge_errors += max(0, len(sel) - 1)
        if len(sel) > 1:
            keep, drop = sel[0], sel[1:]
            mat[:, keep] = mat[:, sel].sum(axis=1)
            cols[keep] = [g for j in sel for g in cols[j]]
            col_src[keep] = [c for j in sel for c in col_src[j]]
            mat = np.delete(mat, drop, axis=1)
            for j in reversed(drop):
                del cols[j], col_src[j]
    # 2. Match each prediction to the single (merged) reference column it overlaps most.
    best = np.argmax(mat, axis=1)
    rows_of_col: list[list[int]] = [[] for _ in cols]
    for i, j in enumerate(best):
        rows_of_col[int(j)].append(i)
    # 3. Merge predictions matched to the same column (split errors), then test the IoU of every group.
    detected_cols = {t: set() for t in thresholds}
    for j, rows in enumerate(rows_of_col):
        out.split_errors += max(0, len(rows) - len(cols[j]))
        if not rows:
            continue
        inter = int(full[np.ix_(rows, col_src[j])].sum())
        size_p = int(pred_sizes[p_ids[rows]].sum())
        size_g = int(ref_sizes[cols[j]].sum())
        group = LesionGroup(tuple(cols[j]), tuple(int(p_ids[i]) for i in rows), inter, size_p, size_g)
        out.groups.append(group)
        for t, thr in thresholds.items():
            if group.iou > thr:
                detected_cols[t].add(j)
            else:
                out.fp[t] += len(rows)
    for t in thresholds:
        out.fp[t] += n_isolated_fp
        out.tp[t] = sum(len(cols[j]) for j in detected_cols[t])
        out.fn[t] = len(cols) - len(detected_cols[t])  # undetected groups count once (scorer)
    return out


def _union_box(objects: list, ids: Sequence[int]) -> tuple[slice, ...]:
    """Union of the bounding boxes of components ``ids`` (``objects`` from ``ndimage.find_objects``)."""
    boxes = [objects[i - 1] for i in ids]
    return tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(len(boxes[0])))


def lesion_metrics(pred_tumor: np.ndarray, ref_tumor: np.ndarray, spacing) -> dict[str, float]:
    """Lesion detection (TP/FP/FN at each threshold, merge/split errors) and lesion-wise scores (IoU > 0)."""
    box = bounding_box(pred_tumor | ref_tumor, BOX_MARGIN)
    if box is not None:
        pred_tumor, ref_tumor = pred_tumor[box], ref_tumor[box]
    p_lab, _ = predicted_lesions(pred_tumor)
    r_lab, _ = reference_lesions(ref_tumor)
    match = match_lesions(p_lab, r_lab)
    out: dict[str, float] = {"tumor_lesions_ref": match.n_ref, "tumor_lesions_pred": match.n_pred}
    for t in DETECTION_THRESHOLDS:
        out[f"tumor_lesion_tp_{t}"] = int(match.tp[t])
        out[f"tumor_lesion_fp_{t}"] = int(match.fp[t])
        out[f"tumor_lesion_fn_{t}"] = int(match.fn[t])
    out["tumor_lesion_merge_errors"] = int(match.merge_errors)
    out["tumor_lesion_split_errors"] = int(match.split_errors)
    sums = dict.fromkeys(LESION_SCORE_METRICS, 0.0)
    detected = match.detected("iou0")
    if detected:
        p_obj, r_obj = ndimage.find_objects(p_lab), ndimage.find_objects(r_lab)
        for g in detected:
            b_p, b_r = _union_box(p_obj, g.pred_ids), _union_box(r_obj, g.ref_ids)
            b = tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(b_p, b_r))
            d = dice_from_counts(g.intersection, g.pred_voxels, g.ref_voxels, 0.0)
            scores = {
                "dice": d,
                "voe": volume_overlap_error(d),
                "rvd": relative_volume_difference(g.pred_voxels, g.ref_voxels),
            }
            scores.update(surface_metrics(np.isin(p_lab[b], g.pred_ids), np.isin(r_lab[b], g.ref_ids), spacing))
            for m in LESION_SCORE_METRICS:  # a merged group scores once per reference lesion in it (scorer)
                sums[m] += len(g.ref_ids) * scores[m]
    for m in LESION_SCORE_METRICS:
        out[f"tumor_lesion_{m}_sum"] = float(sums[m])
    return out
