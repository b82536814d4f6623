"""What preprocessing does to a CT, independent of where the result is stored.

The HU window scaled to [0, 1], optional in-plane resampling (`Preprocessing`, the settings that decide the cached
arrays), the same steps for a new CT at prediction time (`preprocess_image`), and the per-slice liver / tumour
statistics the cache stores next to each label (`slice_stats`) from which the training slice range is chosen
(`liver_z_range`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lits.core.config import DataConfig
from lits.core.errors import LitsError
from lits.data.resample import check_target_spacing, resize_inplane, target_shape


def window_to_unit(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to the window and scale linearly to [0, 1] (float32)."""
    low, high = _check_window(window)
    out = np.clip(np.asarray(hu, dtype=np.float32), low, high)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def _check_window(window) -> tuple[float, float]:
    try:
        low, high = (float(w) for w in window)
    except (TypeError, ValueError):
        raise LitsError(f"data.window={window!r}: give [low, high] in HU, e.g. data.window=[-200,250]") from None
    if not high > low:
        raise LitsError(
            f"data.window={list(window)}: the upper bound must exceed the lower bound, e.g. data.window=[-200,250]"
        )
    return low, high


@dataclass(frozen=True)
class Preprocessing:
    """Everything that decides the cached arrays (plus the affine tolerance, which only decides what is accepted)."""

    window: tuple[float, float] = (-200.0, 250.0)
    target_spacing_xy: tuple[float, float] | None = None  # in-plane mm; None keeps the native grid
    affine_atol: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "window", _check_window(self.window))
        object.__setattr__(self, "target_spacing_xy", check_target_spacing(self.target_spacing_xy))
        atol = self.affine_atol
        if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not atol >= 0:
            raise LitsError(f"data.affine_atol={atol!r}: give a tolerance >= 0 in mm, e.g. data.affine_atol=0.001")
        object.__setattr__(self, "affine_atol", float(atol))

    @classmethod
    def from_data_cfg(cls, data: DataConfig) -> Preprocessing:
        spacing = data.target_spacing_xy
        return cls(
            window=tuple(data.window),
            target_spacing_xy=None if spacing is None else tuple(spacing),
            affine_atol=data.affine_atol,
        )


def preprocess_image(hu: np.ndarray, spacing: tuple[float, float, float], prep: Preprocessing) -> np.ndarray:
    """What the cache does to one canonical (Z, Y, X) HU volume, for new CTs at prediction time: float32 in [0, 1].

    Undo the resampling of predictions with `lits.data.resample.resize_inplane(probs, hu.shape[1:], order=1)`.
    """
    unit = window_to_unit(hu, prep.window)
    if prep.target_spacing_xy is not None:
        unit = resize_inplane(unit, target_shape(hu.shape[1:], spacing[1:], prep.target_spacing_xy), order=1)
    return unit


def preprocess_pair(pair, prep: Preprocessing) -> np.ndarray:
    """A new CT as the cache stores it, streamed: (Z, y, x) float16 in [0, 1] from an opened `CasePair`
    (lits.data.nifti.open_pair), windowed and resampled slab by slab like `cache._write_arrays`, so a 1000-slice CT
    costs its float16 result plus one float32 slab, never whole float32 volumes. Equal to
    `preprocess_image(load_case(...).image, ...).astype(np.float16)`."""
    z_count, height, width = pair.shape
    out_yx = (height, width)
    if prep.target_spacing_xy is not None:
        out_yx = target_shape(out_yx, pair.spacing[1:], prep.target_spacing_xy)
    image = np.empty((z_count, *out_yx), dtype=np.float16)
    for z0, hu, _ in pair.chunks():
        unit = window_to_unit(hu, prep.window)
        del hu
        if out_yx != (height, width):
            unit = resize_inplane(unit, out_yx, order=1)
        image[z0 : z0 + len(unit)] = unit
    return image


def _boxes(mask: np.ndarray) -> np.ndarray:
    """Per-slice bounding boxes [y0, y1, x0, x1) of a (Z, Y, X) mask; -1 where a slice has none."""
    boxes = np.full((mask.shape[0], 4), -1, dtype=np.int32)
    rows, cols = mask.any(axis=2), mask.any(axis=1)  # (Z, Y), (Z, X)
    z = np.flatnonzero(rows.any(axis=1))
    boxes[z, 0] = rows[z].argmax(axis=1)
    boxes[z, 1] = mask.shape[1] - rows[z, ::-1].argmax(axis=1)
    boxes[z, 2] = cols[z].argmax(axis=1)
    boxes[z, 3] = mask.shape[2] - cols[z, ::-1].argmax(axis=1)
    return boxes


def slice_stats(label: np.ndarray) -> dict[str, np.ndarray]:
    """Per-slice liver (label >= 1) and tumour (label == 2) voxel counts and boxes [y0, y1, x0, x1) (-1 if none)."""
    liver = label >= 1
    tumor = label == 2
    return {
        "liver_voxels": liver.sum(axis=(1, 2)).astype(np.int64),
        "tumor_voxels": tumor.sum(axis=(1, 2)).astype(np.int64),
        "liver_box": _boxes(liver),
        "tumor_box": _boxes(tumor),  # lesion-centred crops read only these rows of the label
    }


def liver_z_range(liver_voxels: np.ndarray, spacing_z: float, margin_mm: float | None) -> tuple[int, int]:
    """The liver's slice range widened by margin_mm on each side (all slices if margin_mm is None or no liver)."""
    z_count = len(liver_voxels)
    liver = np.flatnonzero(np.asarray(liver_voxels) > 0)
    if margin_mm is None or not len(liver):
        return 0, z_count
    margin = int(np.ceil(float(margin_mm) / max(float(spacing_z), 1e-6) - 1e-9))
    return max(0, int(liver[0]) - margin), min(z_count, int(liver[-1]) + 1 + margin)
