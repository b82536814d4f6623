"""Surface distances as the scorer's ``Surface`` class (ASSD, MSD, RMSD in mm), and the per-structure
segmentation scores built on them.

Surfaces use the scorer's 18-neighbourhood erosion; distances come from a distance transform (EDT) for boxes
that are small relative to the surfaces and from a KD-tree of the surface points (the scorer's own method) for
large ones. Both are exact; the choice only affects speed (see "Speed" in the package docstring).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from lits.evaluate.metrics.geometry import BOX_MARGIN, bounding_box, check_spacing
from lits.evaluate.metrics.keys import LARGE, SURFACE_METRICS
from lits.evaluate.metrics.overlap import relative_volume_difference, volume_overlap_error

# "auto" surface distances: the EDT costs ~ box voxels, the KD-tree ~ surface points * log; EDT is used while
# box voxels <= this factor * (|S_P| + |S_G|) (measured crossover: ~6; blobs have ~6-15 box voxels per
# surface voxel, more as they grow).
_EDT_VOXELS_PER_SURFACE_POINT = 6


def _erode18(mask: np.ndarray) -> np.ndarray:
    """Binary erosion with ``generate_binary_structure(ndim, 2)`` (18-neighbourhood in 3D), outside = background.

    Same result as ``scipy.ndimage.binary_erosion(mask, structure, border_value=0)``, as an AND of shifted views
    of the padded mask: ~5x faster on a liver-sized box.
    """
    pad = np.pad(mask, 1)
    out = mask.copy()
    for off in itertools.product((-1, 0, 1), repeat=mask.ndim):
        if 1 <= sum(o != 0 for o in off) <= 2:
            out &= pad[tuple(slice(1 + o, 1 + o + n) for o, n in zip(off, mask.shape))]
    return out


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """The scorer's surface: ``mask ^ binary_erosion(mask, generate_binary_structure(ndim, 2))`` with the
    outside counted as background (18-neighbourhood in 3D, 8 in 2D)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~_erode18(mask)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from every surface voxel of ``pred`` to the nearest surface voxel of ``ref``, and back.

    Surfaces as `surface_voxels`; distances between voxel centres scaled by ``spacing``. Works inside the
    union bounding box of both masks plus a margin (exact). ``method``: ``"edt"`` (distance transform of the
    other surface, ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``), ``"kdtree"``
    (``scipy.spatial.cKDTree`` of the surface points, as the scorer) or ``"auto"`` (the cheaper one).
    Raises ValueError if a mask is empty or the shapes differ.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"surface_distances: shapes differ, {pred.shape} vs {ref.shape}")
    if method not in ("auto", "edt", "kdtree"):
        raise ValueError(f"surface_distances: method must be auto, edt or kdtree, got {method!r}")
    sp = np.asarray(check_spacing(spacing, pred.ndim), dtype=np.float64)
    box = bounding_box(pred | ref, BOX_MARGIN)
    if box is None or not pred.any() or not ref.any():
        raise ValueError("surface_distances: both masks must be non-empty")
    sp_pred = surface_voxels(pred[box])
    sp_ref = surface_voxels(ref[box])
    n_pts = int(np.count_nonzero(sp_pred)) + int(np.count_nonzero(sp_ref))
    if method == "auto":
        method = "edt" if sp_pred.size <= _EDT_VOXELS_PER_SURFACE_POINT * n_pts else "kdtree"
    if method == "edt":
        d_pred = ndimage.distance_transform_edt(~sp_ref, sampling=sp)[sp_pred]
        d_ref = ndimage.distance_transform_edt(~sp_pred, sampling=sp)[sp_ref]
    else:
        # Surface voxels shared by both surfaces are at distance 0: query only the others.
        d_pred = _nearest(sp_pred, sp_ref, sp)
        d_ref = _nearest(sp_ref, sp_pred, sp)
    return np.asarray(d_pred, dtype=np.float64), np.asarray(d_ref, dtype=np.float64)


def _nearest(src: np.ndarray, dst: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Distance from every True voxel of ``src`` (C order, as ``src[src]``) to the nearest True voxel of ``dst``."""
    out = np.zeros(int(np.count_nonzero(src)), dtype=np.float64)
    only = src & ~dst
    if only.any():
        # workers=-1: the queries run on every core (each answer is independent of the others: same result)
        out[only[src]] = cKDTree(np.argwhere(dst) * sp).query(np.argwhere(only) * sp, workers=-1)[0]
    return out


def surface_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float], method: str = "auto"
) -> dict[str, float]:
    """``{"assd", "msd", "rmsd"}`` in mm as the scorer's ``Surface``; all ``LARGE`` if either mask is empty."""
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if not pred.any() or not ref.any():
        return dict.fromkeys(SURFACE_METRICS, LARGE)
    d_pred, d_ref = surface_distances(pred, ref, spacing, method)
    n = d_pred.size + d_ref.size
    return {
        "assd": float((d_pred.sum() + d_ref.sum()) / n),
        "msd": float(max(d_pred.max(), d_ref.max())),
        "rmsd": float(math.sqrt((np.square(d_pred).sum() + np.square(d_ref).sum()) / n)),
    }


def segmentation_metrics(
    structure: str, pred: np.ndarray, ref: np.ndarray, overlap: Mapping[str, float], spacing
) -> dict[str, float]:
    """VOE, RVD, ASSD, MSD, RMSD of one structure (masks already cropped), sentinels as the scorer.

    ``overlap`` holds the structure's `overlap_metrics` entries (``<structure>_dice``, ``_pred_voxels``,
    ``_ref_voxels``), computed on the whole volume.
    """
    out = {f"{structure}_voe": volume_overlap_error(float(overlap[f"{structure}_dice"]))}
    out[f"{structure}_rvd"] = relative_volume_difference(
        int(overlap[f"{structure}_pred_voxels"]), int(overlap[f"{structure}_ref_voxels"])
    )
    for m, v in surface_metrics(pred, ref, spacing).items():
        out[f"{structure}_{m}"] = v
    return out
