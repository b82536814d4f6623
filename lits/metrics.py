"""LiTS evaluation metrics, computed the way the official LiTS scorer computes them.

Label maps are integer arrays (Z, Y, X) with 0 background, 1 liver, 2 tumour; spacing is (sz, sy, sx) in mm.

Layout (so the full LiTS metric set slots in without restructuring):

* ``case_metrics(pred, ref, spacing)`` returns ONE flat ``dict[str, float | int]`` per case.
  Every metric group is a private ``_<group>_metrics(...)`` function returning a flat dict that
  ``case_metrics`` merges (today: the voxel-overlap group, i.e. Dice and the raw counts behind it;
  next: surface distances in mm (ASSD/MSD/RMSD), VOE/RVD, lesion detection on 3D components,
  tumour burden).
* ``aggregate(rows)`` turns the per-case rows into one dataset summary. What it does with each key
  is declared in the tables below: ``PER_CASE_MEAN_KEYS`` are averaged over cases (``<key>_per_case``),
  ``GLOBAL_DICE`` entries become ``<structure>_dice_global`` from summed voxel counts. New metrics
  register themselves there (or in a new table, e.g. summed TP/FP/FN for lesion detection).

Conventions of the official scorer (LiTS challenge ``evaluate.py`` / ``helpers/calc_metric.py``), checked in
``veugene/lits-challenge-scoring`` ``program/evaluate.py`` @ 0ceebcfc0bcb0930c9d8e25dba7d1d1f39468dea (the
fork maintained by LiTS organiser E. Vorontsov; later copies of ``PatrickChrist/lits-challenge-scoring``
carry the same rules; the earliest PatrickChrist versions used plain ``medpy.metric.dc`` for both, which
returns 0 when both masks are empty):

* liver mask = label >= 1 (tumour counts as liver); tumour mask = label == 2.
* Tumour Dice per case: ``if not np.any(pred_lesion) and not np.any(true_lesion): 1.0`` else
  ``medpy.metric.dc`` (so exactly one empty mask -> 0).
* Liver Dice per case: ``liver_exists = np.any(sub == 1) and np.any(ref == 1)``; if it is false the case
  scores 0 -- including when BOTH are empty (no 1.0 for liver).
* Global Dice: ``2 * sum(|P & G|) / sum(|P| + |G|)`` over all cases.

Deliberate (documented) deviations, which never matter on LiTS data (every reference has a liver):

* "Liver exists" is tested on label >= 1 rather than the scorer's ``== 1``; the two differ only for a label
  map that has tumour voxels but not a single label-1 voxel.
* When ``liver_exists`` is false the scorer adds only the reference count to the global liver denominator;
  we always add the raw predicted and reference counts (they are reported per case, so the global value
  is reproducible from the CSV).
* If a whole dataset has no voxels of a structure (denominator 0) the scorer would divide 0 by 0; we return
  the per-case empty score instead (tumour 1.0, liver 0.0).

Dice uses numpy counting only (exact int64 counts, processed in slabs along Z to stay in cache and to
keep memory flat on 512x512x500 volumes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Per-case score when prediction and reference are both empty (official scorer, see module docstring).
LIVER_EMPTY_SCORE = 0.0
TUMOR_EMPTY_SCORE = 1.0

# structure name -> empty score; each structure yields <s>_dice, <s>_intersection, <s>_pred_voxels,
# <s>_ref_voxels per case and <s>_dice_global in the summary.
GLOBAL_DICE: dict[str, float] = {"liver": LIVER_EMPTY_SCORE, "tumor": TUMOR_EMPTY_SCORE}

# Per-case keys averaged over cases by `aggregate` (reported as <key>_per_case).
PER_CASE_MEAN_KEYS: tuple[str, ...] = ("liver_dice", "tumor_dice")

COUNT_KEYS: tuple[str, ...] = tuple(
    f"{s}_{c}" for s in GLOBAL_DICE for c in ("intersection", "pred_voxels", "ref_voxels")
)

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


def _check_labels(name: str, label: np.ndarray) -> None:
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


def _check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm), got {tuple(spacing)}")
    return sp


def _overlap_metrics(pred_label: np.ndarray, ref_label: np.ndarray) -> dict[str, float]:
    """Dice for liver and tumour with the LiTS empty-mask conventions, plus the counts for global Dice."""
    c = overlap_counts(pred_label, ref_label)
    out: dict[str, float] = {}
    for s, empty in GLOBAL_DICE.items():
        # One empty mask gives 0 by the formula; both empty gives the structure's empty score
        # (liver 0.0: the scorer's `liver_exists` test fails; tumour 1.0).
        out[f"{s}_dice"] = dice_from_counts(
            c[f"{s}_intersection"], c[f"{s}_pred_voxels"], c[f"{s}_ref_voxels"], empty
        )
    out.update(c)
    return out


def case_metrics(
    pred_label: np.ndarray, ref_label: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict[str, float]:
    """Flat metric dict for one case (see the module docstring for the LiTS conventions).

    Keys: ``liver_dice`` (liver = label >= 1; no predicted or no reference liver -> 0.0, both empty -> 0.0
    as in the official scorer), ``tumor_dice`` (tumour = label == 2; both empty -> 1.0), and the int
    counts ``liver_intersection, liver_pred_voxels, liver_ref_voxels, tumor_intersection,
    tumor_pred_voxels, tumor_ref_voxels`` used for global Dice.

    ``spacing`` (mm, same axis order as the arrays) is validated now and used by the surface-distance
    metrics. Raises ValueError if the shapes differ or a label is outside {0, 1, 2}.
    """
    pred_label = np.asarray(pred_label)
    ref_label = np.asarray(ref_label)
    if pred_label.shape != ref_label.shape:
        raise ValueError(
            f"prediction and reference shapes differ: {pred_label.shape} vs {ref_label.shape}"
        )
    _check_labels("prediction", pred_label)
    _check_labels("reference", ref_label)
    _check_spacing(spacing, pred_label.ndim)
    row: dict[str, float] = {}
    row.update(_overlap_metrics(pred_label, ref_label))
    return row


def aggregate(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Dataset summary of `case_metrics` rows.

    ``<key>_per_case`` = mean over cases for each key in ``PER_CASE_MEAN_KEYS`` (liver_dice, tumor_dice);
    ``<s>_dice_global`` = ``2 * sum(intersection) / sum(pred + ref)`` over all cases for liver and tumor;
    ``num_cases``. Extra keys in the rows (e.g. a case id) are ignored. Raises ValueError for no rows or a
    row missing a required key.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("aggregate: no cases to summarise")
    required = PER_CASE_MEAN_KEYS + COUNT_KEYS
    for k, row in enumerate(rows):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"aggregate: case {k} lacks {missing}; rows must come from case_metrics")
    out: dict[str, float] = {"num_cases": len(rows)}
    for key in PER_CASE_MEAN_KEYS:
        out[f"{key}_per_case"] = float(np.mean([float(row[key]) for row in rows]))
    for s, empty in GLOBAL_DICE.items():
        i = sum(int(row[f"{s}_intersection"]) for row in rows)
        p = sum(int(row[f"{s}_pred_voxels"]) for row in rows)
        r = sum(int(row[f"{s}_ref_voxels"]) for row in rows)
        out[f"{s}_dice_global"] = dice_from_counts(i, p, r, empty)
    return out
