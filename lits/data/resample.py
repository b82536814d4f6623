"""Optional in-plane resampling (`data.target_spacing_xy`) and its inverse, on slice-major (Z, Y, X) arrays.

Pixel centres are aligned the way `torch.nn.functional.interpolate(align_corners=False)` aligns them: the
field of view is kept, output pixel o samples input position (o + 0.5) * n_in / n_out - 0.5. z is never
resampled (2D networks work slice by slice; the slice count, and so the label's z-grid, stays native).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from lits.core.errors import LitsError


def target_shape(shape_yx: tuple[int, int], spacing_yx: tuple[float, float], target_yx) -> tuple[int, int]:
    """In-plane size after resampling from spacing_yx to target_yx mm (at least 1 pixel)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape_yx, spacing_yx, target_yx))


def check_target_spacing(value) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        sy, sx = (float(v) for v in value)
    except (TypeError, ValueError):
        raise LitsError(
            f"data.target_spacing_xy={value!r}: give [sy, sx] in mm, e.g. data.target_spacing_xy=[0.8,0.8], or null"
        ) from None
    if not (sy > 0 and sx > 0 and np.isfinite(sy) and np.isfinite(sx)):
        raise LitsError(
            f"data.target_spacing_xy={value!r}: spacings must be positive mm values, or null to keep the native grid"
        )
    return sy, sx


def resize_inplane(array: np.ndarray, out_yx: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resample the last two axes of (..., Y, X) to out_yx (float32 for order >= 1, same dtype for order 0)."""
    in_yx = array.shape[-2:]
    if tuple(in_yx) == tuple(out_yx):
        return array
    lead = array.shape[:-2]
    flat = array.reshape((-1, *in_yx))
    ry, rx = in_yx[0] / out_yx[0], in_yx[1] / out_yx[1]
    src = flat if order == 0 else flat.astype(np.float32, copy=False)
    out = ndimage.affine_transform(
        src,
        matrix=[1.0, ry, rx],
        offset=[0.0, 0.5 * ry - 0.5, 0.5 * rx - 0.5],
        output_shape=(flat.shape[0], *out_yx),
        order=order,
        mode="nearest",
        prefilter=False,
    )
    return out.reshape((*lead, *out_yx))


def resize_labels(label: np.ndarray, out_yx: tuple[int, int]) -> np.ndarray:
    """Labels {0, 1, 2} (Z, Y, X): the nested masks liver (>= 1) and tumour (== 2) interpolated linearly, cut at 0.5."""
    if tuple(label.shape[-2:]) == tuple(out_yx):
        return label
    liver = resize_inplane((label >= 1).astype(np.float32), out_yx, 1) >= 0.5
    tumor = resize_inplane((label == 2).astype(np.float32), out_yx, 1) >= 0.5
    return (liver.astype(np.uint8) + (liver & tumor)).astype(np.uint8)


def to_native(array: np.ndarray, meta: dict, order: int = 1) -> np.ndarray:
    """Map an array on the cached grid (..., Z, y, x) back to the native canonical grid (..., Z, Y, X).

    Identity (the array itself) when the cache was not resampled. Use order=1 for probabilities, 0 for labels.
    """
    native = meta.get("native")
    if not native or not meta.get("resampled"):
        return array
    return resize_inplane(array, tuple(native["shape"][1:]), order)
