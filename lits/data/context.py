"""2.5D input: a slice and its k neighbours each side as channels, the same stacking in training and inference."""

from __future__ import annotations

import numpy as np

from lits.core.config import DataConfig, typed
from lits.core.errors import LitsError


def check_context_slices(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise LitsError(
            f"data.context_slices={k!r}: give an integer >= 0 (neighbouring slices on each side; 0 = plain 2D)"
        )
    return k


def context_indices(z: int, k: int, z_count: int) -> np.ndarray:
    """Slices z-k .. z+k clamped to [0, z_count): the channels of a 2.5D input."""
    return np.clip(np.arange(z - k, z + k + 1), 0, z_count - 1)


def context_batch(image: np.ndarray, start: int, stop: int, context_slices: int = 0) -> np.ndarray:
    """(stop-start, 2k+1, Y, X) float32 network input for slices start..stop-1 of a (Z, Y, X) volume (k=0: one
    channel)."""
    z_count = image.shape[0]
    k = int(context_slices)
    lo, hi = max(0, start - k), min(z_count, stop + k)
    slab = np.asarray(image[lo:hi], dtype=np.float32)  # one contiguous read of the slabs needed
    rows = [context_indices(z, k, z_count) - lo for z in range(start, stop)]
    return slab[np.stack(rows)]


def input_channels(data_cfg: DataConfig) -> int:
    """The network's in_channels for this data config: 2 * data.context_slices + 1."""
    return typed(DataConfig, data_cfg, "data").input_channels
