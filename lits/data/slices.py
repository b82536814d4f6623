"""Training slices: a lesion-oversampling sampler over every cached slice, and ROI crops read from memory maps.

Loader workers only slice memmaps and crop; augmentation happens later on whole batches on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lits.data.cache import CachedCase


@dataclass(frozen=True)
class SamplingConfig:
    lesion_factor: float = 4.0  # weight of a slice with tumour relative to a liver-only slice
    liver_weight: float = 1.0
    background_weight: float = 0.1  # slices without liver: still seen, rarely
    p_lesion_center: float = 0.5  # crop centred on a tumour voxel (tumour slices only)
    samples_per_epoch: int = 512


class SliceIndex:
    """Flat table of every slice of a list of cached cases: which case, which z, how much liver and tumour."""

    def __init__(self, cases: list[CachedCase]):
        self.cases = cases
        self.case = np.concatenate([np.full(len(c.stats["liver_voxels"]), i) for i, c in enumerate(cases)])
        self.z = np.concatenate([np.arange(len(c.stats["liver_voxels"])) for c in cases])
        self.liver = np.concatenate([c.stats["liver_voxels"] for c in cases])
        self.tumor = np.concatenate([c.stats["tumor_voxels"] for c in cases])
        self.box = np.concatenate([c.stats["liver_box"] for c in cases])

    def __len__(self) -> int:
        return len(self.z)

    def weights(self, cfg: SamplingConfig) -> np.ndarray:
        """Sampling probability per slice: tumour slices lesion_factor x liver slices, background slices small."""
        w = np.where(self.liver > 0, cfg.liver_weight, cfg.background_weight).astype(np.float64)
        w[self.tumor > 0] = cfg.liver_weight * cfg.lesion_factor
        return w / w.sum()


class LesionSampler(Sampler):
    """Draws `samples_per_epoch` slices per epoch with replacement, by weight; DDP-aware.

    Every rank draws the same global sequence from (seed, epoch) and keeps positions rank::world_size, so ranks
    see disjoint draws with identical weights. Yields (slice_index, draw_id); draw_id seeds the crop, so crops
    are reproducible whatever the number of loader workers.
    """

    def __init__(self, weights: np.ndarray, samples_per_epoch: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.weights = weights
        self.num_samples = samples_per_epoch // world_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        total = self.num_samples * self.world_size
        picks = rng.choice(len(self.weights), size=total, p=self.weights)
        base = self.epoch * total
        for pos in range(self.rank, total, self.world_size):
            yield int(picks[pos]), base + pos


def crop_origin(size: int, extent: int, center: int) -> int:
    """Top-left of a crop of `size` centred near `center`, kept inside [0, extent) when the image is large enough."""
    if extent <= size:
        return 0
    return int(np.clip(center - size // 2, 0, extent - size))


def crop_slice(array2d: np.ndarray, y0: int, x0: int, size: int, fill) -> np.ndarray:
    """size x size window at (y0, x0), padded with `fill` where the slice is smaller."""
    out = np.full((size, size), fill, dtype=array2d.dtype)
    part = array2d[y0 : y0 + size, x0 : x0 + size]
    out[: part.shape[0], : part.shape[1]] = part
    return out


class TrainSlices(Dataset):
    """ROI crops of cached slices: centred on a tumour voxel with probability p_lesion_center, else inside the liver box."""

    def __init__(self, index: SliceIndex, crop_size: int, sampling: SamplingConfig, seed: int = 0):
        self.index, self.crop_size, self.sampling, self.seed = index, crop_size, sampling, seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item):
        slice_index, draw_id = item if isinstance(item, tuple) else (item, item)
        rng = np.random.default_rng([self.seed, draw_id])
        case = self.index.cases[self.index.case[slice_index]]
        z = int(self.index.z[slice_index])
        image, label = case.image[z], case.label[z]
        height, width = label.shape
        if self.index.tumor[slice_index] > 0 and rng.random() < self.sampling.p_lesion_center:
            ys, xs = np.nonzero(label == 2)
            pick = rng.integers(len(ys))
            cy, cx = int(ys[pick]), int(xs[pick])
        elif self.index.liver[slice_index] > 0:
            y0, y1, x0, x1 = self.index.box[slice_index]
            cy, cx = int(rng.integers(y0, y1)), int(rng.integers(x0, x1))
        else:
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
        oy = crop_origin(self.crop_size, height, cy)
        ox = crop_origin(self.crop_size, width, cx)
        return {
            "image": torch.from_numpy(crop_slice(image, oy, ox, self.crop_size, 0.0)[None]),  # (1, S, S) float16
            "label": torch.from_numpy(crop_slice(label, oy, ox, self.crop_size, 0)),  # (S, S) uint8
        }
