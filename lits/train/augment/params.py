"""Per-sample augmentation parameters and how they are drawn.

All random parameters are drawn on the CPU from a CPU ``torch.Generator`` and only then moved to the
device, so a seed reproduces the same augmentation on CPU and CUDA. The number and order of draws is
fixed, whatever the probabilities: the parameters added for the nnU-Net v2 recipe are drawn after the
original rotate/elastic/intensity ones, so the original parameters, and therefore the ``default``
recipe, reproduce earlier runs.

Brightness, contrast and gamma factors are drawn the nnU-Net ("BGContrast") way: when the range
straddles 1, half the samples are drawn uniformly below 1 and half above (for [0.75, 1.25] this is
simply uniform; for gamma [0.7, 1.5] it is not).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from lits.core.config.augment import AugmentConfig

__all__ = ["AugmentParams", "sample_params"]


@dataclass(frozen=True)
class AugmentParams:
    """Explicit per-sample parameters of one batch augmentation (all CPU or device tensors).

    Boolean masks say which samples get which transform; values of unselected samples are ignored.
    ``displacement`` is (B, 2, P, P) control-point displacements in pixels, channel 0 along x (width),
    channel 1 along y (height); ``None`` means no elastic deformation for any sample. ``angle_deg`` is
    counter-clockwise as displayed (row 0 at the top): +90 equals ``torch.rot90(x, 1, dims=(-2, -1))``.
    ``scale_factor`` multiplies the sampling coordinates (> 1: anatomy appears smaller).
    ``blur_sigma`` is (B, 2) pixels, column 0 along y (height), column 1 along x (width).
    ``noise_seed`` seeds a CPU generator per sample that draws that sample's (C, H, W) noise field.
    """

    rotate: torch.Tensor  # (B,) bool
    angle_deg: torch.Tensor  # (B,) float
    elastic: torch.Tensor  # (B,) bool
    displacement: torch.Tensor | None  # (B, 2, P, P) float, pixels
    intensity: torch.Tensor  # (B,) bool
    scale: torch.Tensor  # (B,) float, intensity scale
    shift: torch.Tensor  # (B,) float, intensity shift
    scaling: torch.Tensor  # (B,) bool
    scale_factor: torch.Tensor  # (B,) float
    mirror_x: torch.Tensor  # (B,) bool
    mirror_y: torch.Tensor  # (B,) bool
    noise: torch.Tensor  # (B,) bool
    noise_std: torch.Tensor  # (B,) float
    noise_seed: torch.Tensor  # (B,) int64
    blur: torch.Tensor  # (B,) bool
    blur_sigma: torch.Tensor  # (B, 2) float, pixels (y, x)
    brightness: torch.Tensor  # (B,) bool
    brightness_factor: torch.Tensor  # (B,) float
    contrast: torch.Tensor  # (B,) bool
    contrast_factor: torch.Tensor  # (B,) float
    lowres: torch.Tensor  # (B,) bool
    lowres_zoom: torch.Tensor  # (B,) float in (0, 1]
    gamma_invert: torch.Tensor  # (B,) bool
    gamma_invert_value: torch.Tensor  # (B,) float
    gamma: torch.Tensor  # (B,) bool
    gamma_value: torch.Tensor  # (B,) float

    @classmethod
    def identity(cls, batch: int) -> AugmentParams:
        def no() -> torch.Tensor:
            return torch.zeros(batch, dtype=torch.bool)

        zeros, ones = torch.zeros(batch), torch.ones(batch)
        return cls(
            rotate=no(), angle_deg=zeros, elastic=no(), displacement=None, intensity=no(), scale=ones, shift=zeros,
            scaling=no(), scale_factor=ones, mirror_x=no(), mirror_y=no(),
            noise=no(), noise_std=zeros, noise_seed=torch.zeros(batch, dtype=torch.int64),
            blur=no(), blur_sigma=torch.ones(batch, 2), brightness=no(), brightness_factor=ones,
            contrast=no(), contrast_factor=ones, lowres=no(), lowres_zoom=ones,
            gamma_invert=no(), gamma_invert_value=ones, gamma=no(), gamma_value=ones,
        )  # fmt: skip

    def subset(self, index: Any) -> AugmentParams:
        """The parameters of the samples ``index`` (a slice, indices or a mask over the batch)."""
        return AugmentParams(
            **{f.name: None if (v := getattr(self, f.name)) is None else v[index] for f in fields(self)}
        )

    @property
    def spatial(self) -> torch.Tensor:
        """(B,) bool: samples that get resampled (any spatial transform)."""
        return self.rotate | self.elastic | self.scaling | self.mirror_x | self.mirror_y


def _nnunet_factor(lo: float, hi: float, coin: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """nnU-Net's BGContrast sampling: a range straddling 1 is sampled half below and half above 1."""
    if lo < 1.0 < hi:
        return torch.where(coin < 0.5, lo + (1.0 - lo) * u, 1.0 + (hi - 1.0) * u)
    return lo + (hi - lo) * u


class _Draws:
    """The draw primitives of ``sample_params``, each one call on ``generator`` for the whole batch.

    Their dtypes are part of the random streams: uniform values are float64, coins the default dtype (float32).
    """

    def __init__(self, batch: int, generator: torch.Generator | None):
        self.batch = batch
        self.generator = generator

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(self.batch, *shape, generator=self.generator, dtype=torch.float64)

    def uniform(self, lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * self.rand(*shape)

    def coin(self, prob: float) -> torch.Tensor:
        return torch.rand(self.batch, generator=self.generator) < prob

    def factor(self, lo_hi: tuple[float, float]) -> torch.Tensor:
        side, u = self.rand(), self.rand()
        return _nnunet_factor(*lo_hi, side, u).float()

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(self.batch, *shape, generator=self.generator)

    def seed(self) -> torch.Tensor:
        return torch.randint(0, 2**62, (self.batch,), generator=self.generator, dtype=torch.int64)


def sample_params(cfg: AugmentConfig, batch: int, generator: torch.Generator | None = None) -> AugmentParams:
    """Draw the per-sample parameters on the CPU (fixed number of draws, so streams stay stable).

    The original parameters are drawn first, in their original order; the nnU-Net additions follow.
    ``generator`` must be a CPU generator (None: the global RNG); a transform of zero magnitude is
    never selected.
    """
    if generator is not None and generator.device.type != "cpu":
        raise ValueError("BatchAugment needs a CPU torch.Generator (parameters are drawn on the CPU)")
    c = cfg
    draw = _Draws(batch, generator)
    p = c.elastic_points
    rotate = draw.coin(c.p_rotate)
    angle = draw.uniform(-c.max_rotate_deg, c.max_rotate_deg).float()
    elastic = draw.coin(c.p_elastic)
    disp = draw.normal(2, p, p) * c.elastic_sigma
    intensity = draw.coin(c.p_intensity)
    scale = draw.uniform(*c.intensity_scale).float()
    shift = draw.uniform(*c.intensity_shift).float()
    # ---- nnU-Net v2 additions (drawn after the original parameters)
    scaling = draw.coin(c.p_scale)
    scale_factor = draw.uniform(*c.scale_range).float()
    mirror_x = draw.coin(c.p_mirror_x)
    mirror_y = draw.coin(c.p_mirror_y)
    noise = draw.coin(c.p_noise)
    noise_std = draw.uniform(*c.noise_std).float()
    noise_seed = draw.seed()
    blur = draw.coin(c.p_blur)
    blur_sigma = draw.uniform(*c.blur_sigma, 2).float()
    brightness = draw.coin(c.p_brightness)
    brightness_factor = draw.factor(c.brightness_range)
    contrast = draw.coin(c.p_contrast)
    contrast_factor = draw.factor(c.contrast_range)
    lowres = draw.coin(c.p_lowres)
    lowres_zoom = draw.uniform(*c.lowres_zoom).float()
    gamma_invert = draw.coin(c.p_gamma_invert)
    gamma_invert_value = draw.factor(c.gamma_range)
    gamma = draw.coin(c.p_gamma)
    gamma_value = draw.factor(c.gamma_range)
    # zero-magnitude transforms are identities: do not apply them (keeps samples bit-exact)
    rotate &= c.max_rotate_deg > 0
    elastic &= c.elastic_sigma > 0
    scaling &= c.scale_range != (1.0, 1.0)
    noise &= c.noise_std[1] > 0
    brightness &= c.brightness_range != (1.0, 1.0)
    contrast &= c.contrast_range != (1.0, 1.0)
    gamma_invert &= c.gamma_range != (1.0, 1.0)
    gamma &= c.gamma_range != (1.0, 1.0)
    return AugmentParams(
        rotate=rotate, angle_deg=angle, elastic=elastic, displacement=disp,
        intensity=intensity, scale=scale, shift=shift,
        scaling=scaling, scale_factor=scale_factor, mirror_x=mirror_x, mirror_y=mirror_y,
        noise=noise, noise_std=noise_std, noise_seed=noise_seed, blur=blur, blur_sigma=blur_sigma,
        brightness=brightness, brightness_factor=brightness_factor,
        contrast=contrast, contrast_factor=contrast_factor, lowres=lowres, lowres_zoom=lowres_zoom,
        gamma_invert=gamma_invert, gamma_invert_value=gamma_invert_value, gamma=gamma, gamma_value=gamma_value,
    )  # fmt: skip
