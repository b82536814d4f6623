"""Training slices: a lesion-oversampling sampler over the cached slices, and ROI crops read from the cache.

Loader workers only read crops, a whole batch per request; augmentation happens later on whole batches on the device.

Memory stays flat however many cases there are: a crop is read with positional reads (`os.preadv`) of just
its rows from the cached `.npy` files, so the bytes pass through the OS page cache (shared, reclaimable) but
never become part of the process's resident set, unlike pages touched through a long-lived memory map.
The slice index is a few integers per slice.

2.5D input (`context_slices=k`): the image crop holds slices z-k .. z+k as 2k+1 channels (indices clamped to
the volume, i.e. edge slices repeat); `context_batch` builds the same stacks for whole-volume inference.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset, Sampler

from lits.core.config import SamplingConfig
from lits.core.errors import LitsError
from lits.data.cache import CachedCase
from lits.data.context import check_context_slices, context_indices
from lits.data.preprocess import liver_z_range  # noqa: F401  re-exported


def train_z_range(case: CachedCase) -> tuple[int, int]:
    """Slices [z0, z1) of a case that training draws from: `meta["train_z_range"]` (set by prepare) or all."""
    z_count = len(case.stats["liver_voxels"])
    z_range = case.meta.get("train_z_range") if isinstance(case.meta, dict) else None  # set by prepare
    if not z_range:
        return 0, z_count
    return max(0, int(z_range[0])), min(z_count, int(z_range[1]))


class SliceIndex:
    """Flat table of the training slices of a list of cached cases: which case, which z, how much liver and tumour."""

    def __init__(self, cases: list[CachedCase]):
        self.cases = cases
        ranges = [train_z_range(c) for c in cases]
        self.case = np.concatenate([np.full(z1 - z0, i, dtype=np.int32) for i, (z0, z1) in enumerate(ranges)])
        self.z = np.concatenate([np.arange(z0, z1, dtype=np.int32) for z0, z1 in ranges])
        self.liver = np.concatenate([c.stats["liver_voxels"][z0:z1] for c, (z0, z1) in zip(cases, ranges)])
        self.tumor = np.concatenate([c.stats["tumor_voxels"][z0:z1] for c, (z0, z1) in zip(cases, ranges)])
        self.box = np.concatenate([c.stats["liver_box"][z0:z1] for c, (z0, z1) in zip(cases, ranges)])
        self.tumor_box = None  # caches written before tumour boxes existed: read whole label slices instead
        if all("tumor_box" in c.stats for c in cases):
            self.tumor_box = np.concatenate([c.stats["tumor_box"][z0:z1] for c, (z0, z1) in zip(cases, ranges)])

    def __len__(self) -> int:
        return len(self.z)

    def weights(self, cfg: SamplingConfig) -> np.ndarray:
        """Sampling probability per slice: tumour slices lesion_factor x liver slices, background slices small.
        With `per_lesion` the tumour slices' total weight is the same but shared out by lesion (`lesion_weights`)."""
        w = np.where(self.liver > 0, cfg.liver_weight, cfg.background_weight).astype(np.float64)
        tumour = self.tumor > 0
        w[tumour] = cfg.liver_weight * cfg.lesion_factor
        if cfg.per_lesion and tumour.any():
            w[tumour] = w[tumour].sum() * self.lesion_weights()[tumour]
        return w / w.sum()

    def lesion_weights(self) -> np.ndarray:
        """Per slice, the share of tumour draws that lands on it when every 3D lesion (6-connected components of the
        tumour label within the training slices) is equally likely and a lesion's slices are equally likely: sums to
        1 over the tumour slices. Reads each training case's tumour region once."""
        share = np.zeros(len(self), dtype=np.float64)
        spans = []  # per lesion: the slice-index positions it lies in
        offset = 0
        for number, case in enumerate(self.cases):
            rows = np.flatnonzero(self.case == number)  # this case's slices, contiguous and in z order
            tumour_rows = rows[self.tumor[rows] > 0]
            if len(tumour_rows):
                spans += [offset + zs for zs in _lesion_slices(case, self.z[tumour_rows], int(self.z[rows[0]]))]
            offset += len(rows)
        for positions in spans:
            share[positions] += 1.0 / (len(spans) * len(positions))
        return share


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


def _lesion_slices(case: CachedCase, tumour_z: np.ndarray, z0: int) -> list[np.ndarray]:
    """The slices (relative to the training range's first slice z0) of each 3D lesion of one cached case, from its
    label inside the tumour slices' bounding box."""
    za, zb = int(tumour_z.min()), int(tumour_z.max()) + 1
    tumour = np.asarray(case.label[za:zb]) == 2
    tumour[~np.isin(np.arange(za, zb), tumour_z)] = False  # outside the training range
    lesions, _ = ndimage.label(tumour)
    spans = []
    for label, box in enumerate(ndimage.find_objects(lesions), start=1):
        present = np.flatnonzero((lesions[box] == label).any(axis=(1, 2)))  # a lesion may skip slices of its box
        spans.append(present.astype(np.int64) + box[0].start + za - z0)
    return spans


def crop_origin(size: int, extent: int, center: int) -> int:
    """Top-left of a crop of `size` centred near `center`, kept inside [0, extent) when the image is large enough."""
    if extent <= size:
        return 0
    return min(max(int(center) - size // 2, 0), extent - size)


class _OpenFiles:
    """Cache files opened once for a batch and closed after it (a batch reads the same few files many times)."""

    def __init__(self):
        self.fds: dict[str, int] = {}

    def fd(self, path: str) -> int:
        fd = self.fds.get(path)
        if fd is None:
            fd = self.fds[path] = os.open(path, os.O_RDONLY)
        return fd

    def __enter__(self) -> _OpenFiles:
        return self

    def __exit__(self, *exc) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class _NpyRows:
    """Row ranges of one C-ordered (Z, Y, X) .npy file read with preadv, without mapping the file into memory."""

    def __init__(self, array: np.ndarray):
        self.array = array  # fallback (and what gets pickled to spawn-started workers: a memmap reopens by path)
        self.shape = array.shape
        self.dtype = array.dtype
        direct = isinstance(array, np.memmap) and array.filename and array.flags.c_contiguous and hasattr(os, "preadv")
        self.path = array.filename if direct else None
        self.offset = int(array.offset) if direct else 0

    def read(self, z: int, y0: int, y1: int, files: _OpenFiles | None = None) -> np.ndarray:
        """array[z, y0:y1, :] as a new array (`files`: descriptors to reuse; None: open and close the file here)."""
        y0, y1 = max(0, y0), min(self.shape[1], y1)
        if self.path is None:
            return np.array(self.array[z, y0:y1])
        width = self.shape[2]
        out = np.empty((y1 - y0, width), dtype=self.dtype)
        start = self.offset + (z * self.shape[1] + y0) * width * self.dtype.itemsize
        if files is not None:
            got = os.preadv(files.fd(self.path), [out], start)
        else:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                got = os.preadv(fd, [out], start)
            finally:
                os.close(fd)
        if got != out.nbytes:
            raise LitsError(
                f"{self.path}: cache file is shorter than its header says; delete the case folder to rebuild it"
            )
        return out

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None:  # do not pickle the data: reopen by path where needed
            state["array"] = None
        return state


def tumour_centre_candidates(tumour: np.ndarray, lesion_center: str, rng: np.random.Generator):
    """The voxels (ys, xs) a tumour-centred crop picks its centre from, uniformly: every tumour voxel of the slice
    (`voxel`: a lesion is centred in proportion to its area, so large masses dominate), or the voxels of one
    connected tumour region drawn uniformly first (`lesion`: a 4 mm lesion beside a 60 mm mass is centred as often
    as the mass)."""
    if lesion_center == "voxel":
        return np.nonzero(tumour)
    regions, count = ndimage.label(tumour)  # 4-connected in the slice
    return np.nonzero(regions == rng.integers(1, count + 1))


class TrainSlices(Dataset):
    """ROI crops of cached slices: centred on a tumour voxel with probability p_lesion_center (any tumour voxel, or
    one of a uniformly drawn tumour region: `lesion_center`), else inside the liver box.

    An item is a draw (slice_index, draw_id) (a bare slice index is its own draw id): {"image": (2k+1, S, S) float16,
    "label": (S, S) uint8} for k = context_slices. A list of draws is a whole batch, read in one go (the training
    loader asks for batches): {"image": (B, 2k+1, S, S), "label": (B, S, S)}, bit-identical to stacking the single
    crops, since every crop is seeded by its own draw id.
    """

    def __init__(
        self, index: SliceIndex, crop_size: int, sampling: SamplingConfig, seed: int = 0, context_slices: int = 0
    ):
        self.index, self.crop_size, self.sampling, self.seed = index, crop_size, sampling, seed
        self.context_slices = check_context_slices(context_slices)
        self._images = [_NpyRows(c.image) for c in index.cases]
        self._labels = [_NpyRows(c.label) for c in index.cases]

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):  # spawn-started workers: ship the slice table and file names, not the memmaps
        state = dict(self.__dict__)
        index = SliceIndex.__new__(SliceIndex)
        index.__dict__.update({k: v for k, v in self.index.__dict__.items() if k != "cases"})
        index.cases = []
        state["index"] = index
        return state

    def __getitem__(self, item):
        if isinstance(item, list):
            return self.read_batch(item)
        batch = self.read_batch([item])
        return {"image": batch["image"][0], "label": batch["label"][0]}

    def read_batch(self, draws: list) -> dict[str, torch.Tensor]:
        """The crops of `draws` stacked: one output array per batch, each cache file opened once."""
        size, channels = self.crop_size, 2 * self.context_slices + 1
        image = np.zeros((len(draws), channels, size, size), dtype=self._images[0].dtype)
        label = np.zeros((len(draws), size, size), dtype=np.uint8)
        with _OpenFiles() as files:
            for b, draw in enumerate(draws):
                slice_index, draw_id = draw if isinstance(draw, tuple) else (draw, draw)
                self._crop_into(int(slice_index), int(draw_id), image[b], label[b], files)
        return {"image": torch.from_numpy(image), "label": torch.from_numpy(label)}

    def _crop_into(self, slice_index: int, draw_id: int, image: np.ndarray, label: np.ndarray, files) -> None:
        """Draw the crop of (slice_index, draw_id) and write it into the zero-filled `image` (C, S, S) and `label`
        (S, S); where the slice is smaller than the crop the zeros stay (padding)."""
        rng = np.random.default_rng([self.seed, draw_id])
        case_number = int(self.index.case[slice_index])
        images, labels = self._images[case_number], self._labels[case_number]
        z = int(self.index.z[slice_index])
        z_count, height, width = images.shape
        size = self.crop_size
        if self.index.tumor[slice_index] > 0 and rng.random() < self.sampling.p_lesion_center:
            # a uniformly drawn tumour voxel; only the rows of the slice's tumour box are read
            ty0, ty1, tx0, tx1 = (
                self.index.tumor_box[slice_index] if self.index.tumor_box is not None else (0, height, 0, width)
            )
            tumour = labels.read(z, int(ty0), int(ty1), files)[:, tx0:tx1] == 2
            rule = "lesion" if self.sampling.per_lesion else self.sampling.lesion_center
            ys, xs = tumour_centre_candidates(tumour, rule, rng)
            pick = rng.integers(len(ys))
            cy, cx = int(ty0 + ys[pick]), int(tx0 + xs[pick])
        elif self.index.liver[slice_index] > 0:
            y0, y1, x0, x1 = self.index.box[slice_index]
            cy, cx = int(rng.integers(y0, y1)), int(rng.integers(x0, x1))
        else:
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
        oy = crop_origin(size, height, cy)
        ox = crop_origin(size, width, cx)
        rows = labels.read(z, oy, oy + size, files)[:, ox : ox + size]
        label[: rows.shape[0], : rows.shape[1]] = rows
        channels = (z,) if self.context_slices == 0 else context_indices(z, self.context_slices, z_count)
        for c, zc in enumerate(channels):
            rows = images.read(int(zc), oy, oy + size, files)[:, ox : ox + size]
            image[c, : rows.shape[0], : rows.shape[1]] = rows
