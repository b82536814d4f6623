"""LiTS evaluation metrics, computed the way the official LiTS scorer computes them.

Label maps are integer arrays (Z, Y, X) with 0 background, 1 liver, 2 tumour; spacing is (sz, sy, sx) in mm.
Axis 0 is the slice axis: the scorer's in-plane ("axial") operations act on the last two axes.

Layout
------
* ``case_metrics(pred, ref, spacing, detail="full")`` returns ONE flat ``dict[str, float | int]`` per case.
  Every metric group is a ``<group>_metrics(...)`` function returning a flat dict that
  ``case_metrics`` merges: voxel overlap (Dice + counts), segmentation (VOE, RVD, ASSD, MSD, RMSD) for
  liver and tumour, lesion detection on 3D components, tumour burden. ``detail="dice"`` computes only the
  overlap group (cheap: training-time validation).
* ``aggregate(rows)`` turns the rows into one dataset summary; each group it finds in the rows adds its
  keys (tables in ``keys``: ``PER_CASE_MEAN_KEYS``, ``GLOBAL_DICE``, ``SENTINEL_METRICS``,
  ``DETECTION_THRESHOLDS``, ``LESION_SCORE_METRICS``).
* Modules: ``keys`` (row schema, sentinels, empty scores), ``geometry`` (bounding boxes, spacing check),
  ``overlap`` (Dice, counts, VOE, RVD, tumour burden), ``surface`` (surface distances, per-structure
  segmentation scores), ``lesions`` (reference lesions, ``match_lesions``, lesion-wise scores), ``summary``
  (``aggregate``); this package re-exports their public names and defines ``case_metrics``.

Per-case keys (``detail="full"``; the first eight are also the ``detail="dice"`` row)
  ``liver_dice, tumor_dice`` and the int counts ``{liver,tumor}_{intersection,pred_voxels,ref_voxels}``;
  ``{liver,tumor}_{voe,rvd,assd,msd,rmsd}``;
  ``tumor_lesions_ref, tumor_lesions_pred, tumor_lesion_{tp,fp,fn}_{iou50,iou0},
  tumor_lesion_merge_errors, tumor_lesion_split_errors, tumor_lesion_{dice,voe,rvd,assd,msd,rmsd}_sum``;
  ``tumor_burden_pred, tumor_burden_ref, tumor_burden_error``.

Aggregate keys
  ``num_cases, {liver,tumor}_dice_per_case, {liver,tumor}_dice_global`` (always);
  ``{s}_voe_mean``, ``{s}_{rvd,assd,msd,rmsd}_mean`` (over cases where the value is finite) and
  ``{s}_{rvd,assd,msd,rmsd}_sentinel_cases`` (how many cases carry the 9001 sentinel), ``tumor_both_empty_cases``;
  ``tumor_lesion_{precision,recall,tp,fp,fn}_{iou50,iou0}``, ``tumor_lesion_{merge,split}_errors``,
  ``tumor_lesion_fp_in_tumor_free_cases``, ``tumor_lesion_{dice,voe,rvd,assd,msd,rmsd}_mean``;
  ``tumor_burden_rmse, tumor_burden_max_error, tumor_burden_max_abs_error, tumor_burden_sentinel_cases``.
  A mean over no finite value is NaN.

The official scorer (read for this package)
-------------------------------------------
``veugene/lits-challenge-scoring`` (the fork of LiTS organiser E. Vorontsov) ``program/evaluate.py`` and
``program/helpers/calc_metric.py`` @ 0ceebcfc0bcb0930c9d8e25dba7d1d1f39468dea, ``program/helpers/binary_morphology.py``
@ 571bb507036fbca872b206997d408014abf827f7; its ``helpers/surface.py`` is medpy's ``Surface`` class (r0.4.1), read in
``PatrickChrist/lits-challenge-scoring`` ``program/helpers/surface.py`` @ 10f05ff6883239855fffbba309d1baf0cce726cb
(``helpers/utils.py`` only provides the ``time_elapsed`` timer). Earlier ``PatrickChrist`` versions
(e.g. ``evaluate.py`` @ 00f287ee7f1cc395d0322544c5c06605b6ca4ea7) used plain ``medpy.metric.dc`` for per-case Dice,
counted TP/FP/FN with ``np.unique`` and had no reference-lesion dilation; we follow the later rules below.

* Masks: liver = label >= 1 (tumour counts as liver); tumour = label == 2.
* Per-case Dice: tumour ``1.0`` if both masks are empty, else ``medpy.metric.dc``; liver ``0`` unless
  ``liver_exists = np.any(sub == 1) and np.any(ref == 1)``. Global Dice ``2*sum|P&G| / sum(|P|+|G|)``.
* ``compute_segmentation_scores``: inside the bounding box of both masks, if both are non-empty:
  ``dice = dc(p, r)``, ``jaccard = dice / (2 - dice)``, ``voe = 1 - jaccard``, ``rvd = medpy.metric.ravd(r, p)``,
  and ``Surface(p, r, voxel_spacing)`` ASSD / MSD / RMSD; otherwise dice 0, jaccard 0, voe 1 and
  ``rvd = assd = rmsd = msd = LARGE = 9001``. Liver scores are per case; lesion scores per reference lesion
  (merged lesions repeat their group's score) and are averaged over the *detected* reference lesions.
* Surfaces (``Surface.compute_contour``): ``mask ^ binary_erosion(mask, generate_binary_structure(3, 2))``, i.e.
  erosion with the 18-neighbourhood, outside the array counts as background. Distances are Euclidean between
  surface-voxel centres, ``index * voxel_spacing`` (nearest neighbours via ``cKDTree``).
  ``ASSD = (sum d(S_P, S_G) + sum d(S_G, S_P)) / (|S_P| + |S_G|)``, ``RMSD`` the root of the same mean of
  squares, ``MSD = max(max d(S_P, S_G), max d(S_G, S_P))`` (symmetric Hausdorff).
* Lesions: predicted lesions = ``scipy.ndimage.label(sub == 2)`` (default structure: 6-connectivity);
  reference lesions = components (6-connectivity) of ``ref == 2`` dilated in the axial plane by one voxel with a
  4-neighbour cross (``binary_dilation(spacing=[1, 1, 0], radius=1, flat_struct=True)``), then trimmed back to
  ``ref == 2`` -- so reference lesions with a gap of at most two voxels in-plane count as one lesion.
* ``detect_lesions`` (ported as `match_lesions`): every reference lesion g is given to the prediction p that
  overlaps it most (first on ties); a prediction collecting several reference lesions merges them (merge
  errors += n - 1); each prediction is then matched to the (merged) reference group it overlaps most, and all
  predictions matched to one group are merged (split errors += max(0, n_pred - n_ref_in_group)). A group is
  detected when ``|P & G| / |P | G| > min_overlap`` (0.5 and 0: both reported). FP = predictions touching no
  reference lesion + the predictions of every undetected matched group; TP = reference lesions in detected
  groups (merged ones each count); FN = undetected groups, counted ONCE per group (scorer quirk: a merged pair
  that is missed adds 1 FN, a merged pair that is detected adds 2 TP). Precision ``TP/(TP+FP)`` and recall
  ``TP/(TP+FN)`` from counts summed over the dataset (0 if the denominator is 0).
* Tumour burden ``|tumour| / |liver incl. tumour|``; prediction without liver -> ``LARGE``;
  per case ``error = burden_ref - burden_pred``; dataset ``RMSE = sqrt(mean(error^2))`` and ``max = np.max(error)``
  (signed: the largest under-estimate; we also report the max absolute error).

Our choices where the scorer is silent, crashes or has a bug (none matters for ordinary LiTS cases)
-------------------------------------------------------------------------------------------------------
* "Liver exists" (liver Dice, burden) is tested on label >= 1 rather than ``== 1``; they differ only for a
  label map with tumour voxels but no label-1 voxel. Global liver Dice always adds the raw counts (the scorer
  adds only the reference count when ``liver_exists`` fails). A dataset with no voxels of a structure gives the
  per-case empty score as global Dice instead of 0/0.
* RVD is ``(|P| - |G|) / |G|`` (positive = over-segmentation), the definition of the LiTS paper; the scorer calls
  ``medpy.metric.ravd(r, p)`` with the arguments swapped, i.e. ``(|G| - |P|) / |P|``.
* Liver and tumour get per-case segmentation scores on the whole mask (the scorer scores tumour per lesion;
  that is reported too, as ``tumor_lesion_*``). Empty masks follow the scorer's rule (``rvd/assd/msd/rmsd`` =
  9001 when either mask is empty, the scorer crashes for an empty liver in both), VOE is ``1 - jaccard`` of the
  per-case Dice, so a tumour-free case predicted tumour-free has tumour VOE 0 (Dice 1) and sentinel distances.
* A reference without lesions: the scorer's ``detect_lesions`` returns early (TP = FP = FN = 0, so predicted
  lesions there are never FPs; the newer ``evaluate.py`` then fails to unpack the result). We keep TP/FP/FN = 0
  and report those predictions as ``tumor_lesion_fp_in_tumor_free_cases``.
* Lesion-wise scores (``tumor_lesion_*_sum``, averaged in ``aggregate``) use the lesions detected at IoU > 0,
  the scorer's default ``overlap = 0``. (Its ``evaluate.py`` indexes the per-lesion scores with the per-group
  detection flags, which misaligns after a merge; we score each reference lesion with its own group.)
* The scorer's dilation helper drops the last ``n % cpu_count`` voxels (a work-splitting bug) and its
  detection mask is ``uint8`` (labels > 255 wrap); we implement the intended operations.
* ``tumor_burden_error`` is 9001 when either burden is (the scorer's would be ``ref - 9001``); aggregates skip it.

Speed
-----
Everything after the overlap counts works inside the bounding box of the union of both label maps; surface
distances inside the union box of the two masks plus a 2-voxel margin (exact: outside the box both masks are
empty). Distances come from ``scipy.ndimage.distance_transform_edt(~surface, sampling=spacing)`` when the box
is small relative to the surfaces (tumours), and from a ``scipy.spatial.cKDTree`` of the surface points (the
scorer's own method) for large boxes (livers), where it is ~5x faster; both are exact and tested against each
other and against ``medpy.metric``. Overlap counts use numpy counting in slabs along Z (exact int64 counts,
flat memory on 512x512x500 volumes); the 18-neighbourhood erosion is an AND of shifted views (~5x scipy's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lits.evaluate.metrics.geometry import BOX_MARGIN, bounding_box, check_spacing
from lits.evaluate.metrics.keys import (
    BURDEN_KEYS,
    COUNT_KEYS,
    DETAILS,
    DETECTION_THRESHOLDS,
    GLOBAL_DICE,
    LARGE,
    LESION_KEYS,
    LESION_SCORE_KEYS,
    LESION_SCORE_METRICS,
    LIVER_EMPTY_SCORE,
    PER_CASE_MEAN_KEYS,
    SEGMENTATION_KEYS,
    SENTINEL_METRICS,
    SIZE_BIN_KEYS,
    SIZE_BINS,
    SURFACE_METRICS,
    TUMOR_EMPTY_SCORE,
)
from lits.evaluate.metrics.lesions import (
    LesionGroup,
    LesionMatch,
    equivalent_diameter_mm,
    lesion_metrics,
    match_lesions,
    predicted_lesions,
    reference_lesions,
    size_bin,
    size_bin_metrics,
)
from lits.evaluate.metrics.overlap import (
    burden_metrics,
    dice,
    dice_from_counts,
    overlap_counts,
    overlap_metrics,
    relative_volume_difference,
    tumor_burden,
    volume_overlap_error,
)
from lits.evaluate.metrics.summary import aggregate
from lits.evaluate.metrics.surface import segmentation_metrics, surface_distances, surface_metrics, surface_voxels

__all__ = [
    "BURDEN_KEYS",
    "COUNT_KEYS",
    "DETAILS",
    "DETECTION_THRESHOLDS",
    "GLOBAL_DICE",
    "LARGE",
    "LESION_KEYS",
    "LESION_SCORE_KEYS",
    "SIZE_BIN_KEYS",
    "SIZE_BINS",
    "LESION_SCORE_METRICS",
    "LIVER_EMPTY_SCORE",
    "PER_CASE_MEAN_KEYS",
    "SEGMENTATION_KEYS",
    "SENTINEL_METRICS",
    "SURFACE_METRICS",
    "TUMOR_EMPTY_SCORE",
    "LesionGroup",
    "LesionMatch",
    "aggregate",
    "case_metrics",
    "dice",
    "dice_from_counts",
    "equivalent_diameter_mm",
    "match_lesions",
    "overlap_counts",
    "predicted_lesions",
    "reference_lesions",
    "size_bin",
    "size_bin_metrics",
    "relative_volume_difference",
    "surface_distances",
    "surface_metrics",
    "surface_voxels",
    "tumor_burden",
    "volume_overlap_error",
]


def _check_labels(name: str, label: np.ndarray) -> None:
    """Raises ValueError unless ``label`` is boolean or an integer map with values in {0, 1, 2}."""
    if label.dtype == bool:
        return
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{name} label map must have an integer dtype, got {label.dtype}")
    if label.size == 0:
        return
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi > 2:
        raise ValueError(
            f"{name} label map has values in [{lo}, {hi}]; LiTS labels are 0 background, 1 liver, 2 tumour"
        )


def case_metrics(
    pred_label: np.ndarray,
    ref_label: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    detail: str = "full",
) -> dict[str, float]:
    """Flat metric dict for one case (keys and LiTS conventions in the package docstring).

    ``detail="dice"``: only ``liver_dice`` (liver = label >= 1; no predicted or no reference liver -> 0.0, both
    empty -> 0.0 as in the official scorer), ``tumor_dice`` (tumour = label == 2; both empty -> 1.0) and the
    int counts ``liver_intersection, liver_pred_voxels, liver_ref_voxels, tumor_intersection,
    tumor_pred_voxels, tumor_ref_voxels`` used for global Dice -- cheap, for training-time validation.
    ``detail="lesions"``: the Dice row plus lesion detection and the lesion size bins, without surface distances
    (training-time validation of lesion finding). ``detail="full"`` (default) adds the segmentation, lesion
    detection, size-bin, lesion-wise score and tumour-burden groups.

    ``spacing`` (mm, same axis order as the arrays) scales the surface distances. Raises ValueError if the
    shapes differ, a label is outside {0, 1, 2}, the spacing is invalid or ``detail`` is unknown.
    """
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, got {detail!r}")
    pred_label = np.asarray(pred_label)
    ref_label = np.asarray(ref_label)
    if pred_label.shape != ref_label.shape:
        raise ValueError(f"prediction and reference shapes differ: {pred_label.shape} vs {ref_label.shape}")
    _check_labels("prediction", pred_label)
    _check_labels("reference", ref_label)
    sp = check_spacing(spacing, pred_label.ndim)
    row: dict[str, float] = {}
    row.update(overlap_metrics(pred_label, ref_label))
    if detail == "dice":
        return row
    if detail == "lesions":
        box = bounding_box((pred_label == 2) | (ref_label == 2), BOX_MARGIN)
        empty = np.zeros((1,) * pred_label.ndim, bool)
        p_t, r_t = (pred_label[box] == 2, ref_label[box] == 2) if box else (empty, empty)
        row.update(lesion_metrics(p_t, r_t, sp, scores=False))
        return row
    # Everything else lives inside the box of all labelled voxels (tumour is inside liver = label >= 1).
    box = bounding_box((pred_label != 0) | (ref_label != 0), BOX_MARGIN)
    if box is None:
        p = r = np.zeros((1,) * pred_label.ndim, dtype=pred_label.dtype)
    else:
        p, r = pred_label[box], ref_label[box]
    row.update(segmentation_metrics("liver", p >= 1, r >= 1, row, sp))
    p_t, r_t = p == 2, r == 2
    row.update(segmentation_metrics("tumor", p_t, r_t, row, sp))
    row.update(lesion_metrics(p_t, r_t, sp))
    row.update(burden_metrics(row))
    return row
