"""The `augment` group: batched on-device augmentation (lits/train/augment/), each transform with a per-sample
probability. This names and checks the knobs; what each one does is documented where it is applied (`spatial`,
`intensity`) and drawn (`params`). Defaults: the original recipe (rotation, elastic, intensity scale and shift);
configs/augment/nnunet.yaml holds nnU-Net v2's probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lits.core.config.typed import Schema
from lits.core.errors import LitsError

__all__ = ["AugmentConfig"]

_PROBABILITIES = (
    "p_rotate", "p_elastic", "p_intensity", "p_scale", "p_mirror_x", "p_mirror_y", "p_noise", "p_blur",
    "p_brightness", "p_contrast", "p_lowres", "p_gamma", "p_gamma_invert",
)  # fmt: skip


def _as_pair(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise LitsError(
            f"augment.{name} must be a pair [low, high] of numbers, got {value!r}; "
            f"fix it in the augment config or override e.g. augment.{name}=[0.9,1.1]"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise LitsError(f"augment.{name} must be a finite pair with low <= high, got {value!r}")
    return lo, hi


@dataclass(unsafe_hash=True)  # mutable: Hydra overrides it; hashable once normalised
class AugmentConfig(Schema):
    """Augmentation knobs (the ``augment`` config group). Probabilities are per sample.

    Every probability added after the original rotate/elastic/intensity set defaults to 0, so the
    defaults reproduce the original recipe; ``configs/augment/nnunet.yaml`` holds the nnU-Net v2 values.
    """

    PREFIX = "augment"

    enabled: bool = True  # false: no augmentation at all
    p_rotate: float = 0.5  # per-sample probability of a rotation ...
    max_rotate_deg: float = 15.0  # ... by up to this many degrees either way
    p_elastic: float = 0.3  # per-sample probability of an elastic deformation
    elastic_sigma: float = 25.0  # std of control-point displacements, in pixels
    elastic_points: int = 3  # control grid is points x points, upsampled bicubically to the image
    p_intensity: float = 0.5  # per-sample probability of an intensity scale and shift ...
    intensity_scale: tuple[float, float] = (0.9, 1.1)  # ... x * s ...
    intensity_shift: tuple[float, float] = (-0.1, 0.1)  # ... + t (image units)
    # spatial, nnU-Net v2
    p_scale: float = 0.0
    scale_range: tuple[float, float] = (0.7, 1.4)  # nnU-Net convention: s > 1 makes the anatomy smaller
    p_mirror_x: float = 0.0  # flip along the width
    p_mirror_y: float = 0.0  # flip along the height
    # intensity, nnU-Net v2 (in the order applied)
    p_noise: float = 0.0  # Gaussian noise
    noise_std: tuple[float, float] = (0.0, 0.03)  # in image units ([0, 1] HU window by default)
    p_blur: float = 0.0  # Gaussian blur
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # pixels, drawn per axis
    p_brightness: float = 0.0  # multiplicative brightness
    brightness_range: tuple[float, float] = (0.75, 1.25)  # x * f
    p_contrast: float = 0.0  # contrast around the mean
    contrast_range: tuple[float, float] = (0.75, 1.25)  # (x - mean) * f + mean, clipped to [min, max]
    p_lowres: float = 0.0  # simulated low resolution
    lowres_zoom: tuple[float, float] = (0.5, 1.0)  # nearest-exact down to zoom * size, bilinear back up
    p_gamma_invert: float = 0.0  # inverted gamma pass (applied before the plain one, as nnU-Net)
    p_gamma: float = 0.0  # gamma
    gamma_range: tuple[float, float] = (0.7, 1.5)  # both passes; mean and std are retained

    def __post_init__(self) -> None:
        def bad(name: str, what: str) -> LitsError:
            return LitsError(
                f"augment.{name} {what}, got {getattr(self, name)!r}; "
                f"fix it in the augment config or on the command line (augment.{name}=...)"
            )

        if not isinstance(self.enabled, bool):
            raise bad("enabled", "must be true or false")
        for name in _PROBABILITIES:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise bad(name, "must be a probability in [0, 1]")
            object.__setattr__(self, name, float(v))
        for name in ("max_rotate_deg", "elastic_sigma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < math.inf:
                raise bad(name, "must be a finite number >= 0")
            object.__setattr__(self, name, float(v))
        pts = self.elastic_points
        if isinstance(pts, bool) or not isinstance(pts, int) or pts < 1:
            raise bad("elastic_points", "must be an integer >= 1")
        # (name, smallest allowed low, low may equal it, largest allowed high, what to say)
        pairs = (
            ("intensity_scale", -math.inf, True, math.inf, ""),
            ("intensity_shift", -math.inf, True, math.inf, ""),
            ("scale_range", 0.0, False, math.inf, "must be a pair [low, high] with 0 < low <= high"),
            ("noise_std", 0.0, True, math.inf, "must be a pair [low, high] with 0 <= low <= high"),
            ("blur_sigma", 0.0, False, math.inf, "must be a pair [low, high] of pixels with 0 < low <= high"),
            ("brightness_range", 0.0, True, math.inf, "must be a pair [low, high] with 0 <= low <= high"),
            ("contrast_range", 0.0, True, math.inf, "must be a pair [low, high] with 0 <= low <= high"),
            ("lowres_zoom", 0.0, False, 1.0, "must be a pair [low, high] with 0 < low <= high <= 1"),
            ("gamma_range", 0.0, False, math.inf, "must be a pair [low, high] with 0 < low <= high"),
        )
        for name, floor, floor_ok, ceil, what in pairs:
            lo, hi = _as_pair(name, getattr(self, name))
            if lo < floor or (lo == floor and not floor_ok) or hi > ceil:
                raise bad(name, what)
            object.__setattr__(self, name, (lo, hi))
