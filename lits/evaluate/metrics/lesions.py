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
from lits.evaluate.metrics.keys import DETECTION_THRESHOLDS, LESION_SCORE_METRICS, SIZE_BIN_COUNTS, SIZE_BINS
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


@dataclass
class _MergedReferences:
    """Reference lesions after the scorer's merge step, one entry per (merged) column of ``overlap``."""

    overlap: np.ndarray  # voxel overlap, touching predictions x merged columns
    members: list[list[int]]  # reference lesion ids in each merged column
    sources: list[list[int]]  # original column indices of each merged column
    merge_errors: int


def _overlap_matrix(
    pred_labels: np.ndarray, ref_labels: np.ndarray, ref_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The predictions touching a reference lesion (sorted ids) and their int64 voxel overlap with every
    reference lesion in ``ref_ids`` (rows: those predictions, columns: ``ref_ids``)."""
    both = (pred_labels > 0) & (ref_labels > 0)
    p_vox = pred_labels[both]
    g_vox = ref_labels[both]
    touching = np.unique(p_vox)
    n_p, n_g = len(touching), len(ref_ids)
    pi = np.searchsorted(touching, p_vox)
    gi = np.searchsorted(ref_ids, g_vox)
    overlap = np.bincount(pi * n_g + gi, minlength=n_p * n_g).reshape(n_p, n_g).astype(np.int64)
    return touching, overlap


def _merge_spanned_references(overlap: np.ndarray, ref_ids: np.ndarray) -> _MergedReferences:
    """Scorer step 1: every reference column goes to the prediction row overlapping it most (first on ties);
    the columns one prediction collects merge into one (merge errors += n - 1), rows visited in order."""
    mat = overlap.copy()
    members: list[list[int]] = [[int(g)] for g in ref_ids]
    sources: list[list[int]] = [[j] for j in range(len(ref_ids))]
    merge_errors = 0
    for i in range(mat.shape[0]):
        sel = [j for j in np.flatnonzero(mat[i]) if int(np.argmax(mat[:, j])) == i]
        merge_errors += max(0, len(sel) - 1)
        if len(sel) > 1:
            keep, drop = sel[0], sel[1:]
            mat[:, keep] = mat[:, sel].sum(axis=1)
            members[keep] = [g for j in sel for g in members[j]]
            sources[keep] = [c for j in sel for c in sources[j]]
            mat = np.delete(mat, drop, axis=1)
            for j in reversed(drop):
                del members[j], sources[j]
    return _MergedReferences(mat, members, sources, merge_errors)


def _rows_per_column(merged: np.ndarray) -> list[list[int]]:
    """Scorer step 2: each prediction row goes to the single merged column it overlaps most (first on ties)."""
    rows_of_col: list[list[int]] = [[] for _ in range(merged.shape[1])]
    for i, j in enumerate(np.argmax(merged, axis=1)):
        rows_of_col[int(j)].append(i)
    return rows_of_col


def _count_detections(match: LesionMatch, n_groups: int, n_isolated_fp: int) -> None:
    """Scorer step 4, per threshold: TP = reference lesions in detected groups, FP = predictions of undetected
    groups + ``n_isolated_fp``, FN = undetected groups out of ``n_groups`` (each counted once, as the scorer)."""
    for name, threshold in match.thresholds.items():
        detected = [g for g in match.groups if g.iou > threshold]
        missed = [g for g in match.groups if not g.iou > threshold]
        match.tp[name] = sum(len(g.ref_ids) for g in detected)
        match.fp[name] = n_isolated_fp + sum(len(g.pred_ids) for g in missed)
        match.fn[name] = n_groups - len(detected)


def match_lesions(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    thresholds: Mapping[str, float] | None = None,
) -> LesionMatch:
    """Port of the scorer's ``detect_lesions`` (see the package docstring) for several IoU thresholds at once.

    ``pred_labels``/``ref_labels``: integer component maps (0 = background) of the same shape, e.g. from
    `predicted_lesions` / `reference_lesions`. ``thresholds`` maps names to IoUs (default
    ``DETECTION_THRESHOLDS``). Raises ValueError if the shapes differ.
    """
    thresholds = dict(DETECTION_THRESHOLDS if thresholds is None else thresholds)
    pred_labels = np.asarray(pred_labels)
    ref_labels = np.asarray(ref_labels)
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"match_lesions: shapes differ, {pred_labels.shape} vs {ref_labels.shape}")
    pred_sizes = np.bincount(pred_labels.ravel())
    ref_sizes = np.bincount(ref_labels.ravel())
    pred_ids = np.flatnonzero(pred_sizes[1:]) + 1
    ref_ids = np.flatnonzero(ref_sizes[1:]) + 1
    zero = dict.fromkeys(thresholds, 0)
    out = LesionMatch(
        n_ref=len(ref_ids), n_pred=len(pred_ids), thresholds=thresholds, tp=dict(zero), fp=dict(zero), fn=dict(zero)
    )
    if len(ref_ids) == 0:
        return out  # scorer: early return, TP = FP = FN = 0

    touching, overlap = _overlap_matrix(pred_labels, ref_labels, ref_ids)
    merged = _merge_spanned_references(overlap, ref_ids)
    out.merge_errors = merged.merge_errors
    # Scorer step 3: the predictions matched to one merged column form a group; split errors count the
    # predictions beyond the group's number of reference lesions.
    for j, rows in enumerate(_rows_per_column(merged.overlap)):
        members = merged.members[j]
        out.split_errors += max(0, len(rows) - len(members))
        if not rows:
            continue
        group_preds = touching[rows]
        out.groups.append(
            LesionGroup(
                ref_ids=tuple(members),
                pred_ids=tuple(int(p) for p in group_preds),
                intersection=int(overlap[np.ix_(rows, merged.sources[j])].sum()),
                pred_voxels=int(pred_sizes[group_preds].sum()),
                ref_voxels=int(ref_sizes[members].sum()),
            )
        )
    _count_detections(out, len(merged.members), len(pred_ids) - len(touching))
    return out


def _union_box(objects: list, ids: Sequence[int]) -> tuple[slice, ...]:
    """Union of the bounding boxes of components ``ids`` (``objects`` from ``ndimage.find_objects``)."""
    boxes = [objects[i - 1] for i in ids]
    return tuple(slice(min(b[d].start for b in boxes), max(b[d].stop for b in boxes)) for d in range(len(boxes[0])))


def _group_scores(group: LesionGroup, p_lab: np.ndarray, r_lab: np.ndarray, box, spacing) -> dict[str, float]:
    """Segmentation scores of one matched group (its predictions vs its reference lesions) inside ``box``."""
    d = dice_from_counts(group.intersection, group.pred_voxels, group.ref_voxels, 0.0)
    scores = {
        "dice": d,
        "voe": volume_overlap_error(d),
        "rvd": relative_volume_difference(group.pred_voxels, group.ref_voxels),
    }
    scores.update(surface_metrics(np.isin(p_lab[box], group.pred_ids), np.isin(r_lab[box], group.ref_ids), spacing))
    return scores


def equivalent_diameter_mm(volume_mm3: float | np.ndarray) -> float | np.ndarray:
    """Diameter of the sphere with this volume: (6 V / pi)^(1/3)."""
    return np.cbrt(6.0 * np.asarray(volume_mm3, dtype=np.float64) / np.pi)


def size_bin(diameter_mm: float) -> str:
    """The SIZE_BINS name of a lesion with this equivalent diameter."""
    return next(name for name, (low, high) in SIZE_BINS.items() if low <= diameter_mm < high)


def size_bin_metrics(match: LesionMatch, ref_labels: np.ndarray, spacing) -> dict[str, float]:
    """Per size bin of the reference lesions: their number, how many were detected at each IoU threshold, and the
    sum of their Dice (each lesion scores the Dice of the group it is matched in, as the scorer's lesion-wise
    scores; a lesion no prediction touches scores 0). Counted per lesion, merged lesions each count."""
    out: dict[str, float] = {f"tumor_lesion_{c}_{b}": 0 for b in SIZE_BINS for c in SIZE_BIN_COUNTS}
    sizes = np.bincount(np.asarray(ref_labels).ravel())
    voxel_mm3 = float(np.prod(spacing))
    group_of = {ref: group for group in match.groups for ref in group.ref_ids}
    for ref in np.flatnonzero(sizes[1:]) + 1:
        name = size_bin(float(equivalent_diameter_mm(sizes[ref] * voxel_mm3)))
        out[f"tumor_lesion_ref_{name}"] += 1
        group = group_of.get(int(ref))
        if group is None:
            continue
        out[f"tumor_lesion_dice_sum_{name}"] += dice_from_counts(
            group.intersection, group.pred_voxels, group.ref_voxels, 0.0
        )
        for threshold_name, threshold in match.thresholds.items():
            out[f"tumor_lesion_tp_{threshold_name}_{name}"] += int(group.iou > threshold)
    return out


def lesion_metrics(pred_tumor: np.ndarray, ref_tumor: np.ndarray, spacing, scores: bool = True) -> dict[str, float]:
    """Lesion detection (TP/FP/FN at each threshold, merge/split errors), size-bin counts and, with `scores`, the
    lesion-wise segmentation scores of the lesions detected at IoU > 0 (surface distances: the costly part)."""
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
    out.update(size_bin_metrics(match, r_lab, spacing))
    if not scores:
        return out
    sums = dict.fromkeys(LESION_SCORE_METRICS, 0.0)
    detected = match.detected("iou0")
    if detected:
        p_obj, r_obj = ndimage.find_objects(p_lab), ndimage.find_objects(r_lab)
        for g in detected:
            b_p, b_r = _union_box(p_obj, g.pred_ids), _union_box(r_obj, g.ref_ids)
            b = tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(b_p, b_r))
            scores = _group_scores(g, p_lab, r_lab, b, spacing)
            for m in LESION_SCORE_METRICS:  # a merged group scores once per reference lesion in it (scorer)
                sums[m] += len(g.ref_ids) * scores[m]
    for m in LESION_SCORE_METRICS:
        out[f"tumor_lesion_{m}_sum"] = float(sums[m])
    return out
