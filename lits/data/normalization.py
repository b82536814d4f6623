"""What the network sees: the HU window as cached, or nnU-Net's CT normalisation of it (`data.normalization`).

The cache holds every CT as HU clipped to `data.window` and scaled to [0, 1] (lits/data/preprocess.py).
* window: the network reads those [0, 1] values (the published recipe's "intensity normalisation").
* ct:     nnU-Net's CTNormalization: HU clipped to the 0.5 / 99.5 percentiles of the foreground (liver + tumour)
          intensities of the training cases, then z-scored with their mean and std.

The `ct` statistics are computed once when training starts, from a fixed sample of each training case's foreground
(nnU-Net's fingerprint samples foreground voxels per case the same way), stored in the checkpoint (`normalization`)
and applied to each batch on its device, after augmentation, in training, validation, evaluate and predict alike.
They are exact HU statistics as long as the foreground lies inside `data.window`; when more than 0.5 % of it is
clipped by the window the percentiles are unknowable from the cache and preparation stops with the fix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from lits.core.errors import LitsError

if TYPE_CHECKING:  # apply() works on torch tensors and numpy arrays alike; the ONNX path never imports torch
    import torch

KINDS = ("window", "ct")
SLICES_PER_CASE = 32  # foreground slices read per training case (evenly spaced through its liver)
SAMPLES_PER_CASE = 10_000  # foreground voxels kept per case, as nnU-Net's fingerprint
CLIPPED_LIMIT = 0.005  # the 0.5 / 99.5 percentiles are known only if at most this share sits on a window bound


@dataclass(frozen=True)
class Normalization:
    kind: str = "window"
    window: tuple[float, float] = (-200.0, 250.0)  # HU mapped to [0, 1] by the cache
    clip: tuple[float, float] | None = None  # ct: HU percentiles 0.5 / 99.5 of the training foreground
    mean: float = 0.0  # ct: HU mean of the training foreground
    std: float = 1.0  # ct: HU std of the training foreground

    def apply(self, x: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """[0, 1] window values -> network input, float32 (elementwise: shapes, device and memory format are kept)."""
        if self.kind == "window":
            return x
        low, high = self.window
        hu = (x.astype(np.float32) if isinstance(x, np.ndarray) else x.float()) * (high - low) + low
        return (hu.clip(*self.clip) - self.mean) / self.std

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> Normalization:
        """From a checkpoint's `normalization` entry; checkpoints without one were trained on the window."""
        if not d:
            return cls()
        clip = d.get("clip")
        return cls(
            kind=d["kind"],
            window=tuple(float(w) for w in d["window"]),
            clip=None if clip is None else tuple(clip),
            mean=float(d["mean"]),
            std=float(d["std"]),
        )

    def describe(self) -> str:
        if self.kind == "window":
            return f"HU window {list(self.window)} -> [0, 1]"
        return (
            f"CT: HU clipped to [{self.clip[0]:.1f}, {self.clip[1]:.1f}] (foreground p0.5/p99.5), "
            f"z-scored with mean {self.mean:.1f} / std {self.std:.1f} HU"
        )


def foreground_hu_sample(case, window: tuple[float, float], seed: int) -> np.ndarray:
    """Up to SAMPLES_PER_CASE foreground (label >= 1) HU values of one cached case, from evenly spaced liver slices."""
    liver_slices = np.flatnonzero(np.asarray(case.stats["liver_voxels"]) > 0)
    if not len(liver_slices):
        return np.empty(0, np.float32)
    picked = liver_slices[np.unique(np.linspace(0, len(liver_slices) - 1, SLICES_PER_CASE).round().astype(int))]
    low, high = window
    values = []
    for z in picked:
        unit = np.asarray(case.image[z], np.float32)[np.asarray(case.label[z]) >= 1]
        values.append(unit * (high - low) + low)
    values = np.concatenate(values)
    if len(values) > SAMPLES_PER_CASE:
        values = np.random.default_rng(seed).choice(values, SAMPLES_PER_CASE, replace=False)
    return values


def from_training_cases(data_cfg, cases: list, seed: int = 0) -> Normalization:
    """`data.normalization` for a run whose training cases are `cases` (computed once; stored in the checkpoint)."""
    kind = data_cfg.normalization
    if kind not in KINDS:
        raise LitsError(f"data.normalization={kind}: choose window (HU window -> [0, 1]) or ct (nnU-Net's CT z-score)")
    window = tuple(float(w) for w in data_cfg.window)
    if kind == "window":
        return Normalization("window", window)
    values = np.concatenate([foreground_hu_sample(c, window, seed + i) for i, c in enumerate(cases)])
    if len(values) < 100:
        raise LitsError(
            "data.normalization=ct: the training cases hold (almost) no liver voxels to take statistics from; "
            "check the labels or use data.normalization=window"
        )
    for bound, share in ((window[0], np.mean(values <= window[0])), (window[1], np.mean(values >= window[1]))):
        if share > CLIPPED_LIMIT:
            raise LitsError(
                f"data.normalization=ct: {100 * share:.1f}% of the training foreground sits at the data.window bound "
                f"{bound:g} HU, so its percentiles are unknown; widen the window, e.g. data.window=[-1000,1000]"
            )
    clip = (float(np.percentile(values, 0.5)), float(np.percentile(values, 99.5)))
    return Normalization("ct", window, clip, float(values.mean()), float(max(values.std(), 1e-8)))
