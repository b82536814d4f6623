"""Batched training augmentation, run on the training device.

CPU data-loader workers only slice memmapped arrays; this module then augments the whole batch at
once on whatever device the batch lives on (CUDA in practice). The transforms and their defaults
follow nnU-Net v2 (batchgeneratorsv2, ``nnUNetTrainer.get_training_transforms``); the ``augment``
config group ``default`` keeps the original rotate/elastic/intensity recipe, ``nnunet`` switches on
the nnU-Net v2 2d recipe.

Spatial (all composed into ONE sampling grid per batch; images are resampled with one bilinear
``grid_sample`` call, border padding, labels with one nearest ``grid_sample`` call, zero =
background padding, so label values never leave their original set):

* mirroring along x (width) and/or y (height), folded into the grid as a sign flip of the source
  coordinates. It acts on the input, before rotation/scaling/elastic (nnU-Net mirrors last; with
  symmetric rotation/elastic distributions the two orders give the same augmentation distribution).
  A sample whose ONLY spatial transform is mirroring is not resampled but flipped with ``torch.flip``
  (bit-exact; through ``grid_sample`` the float32 un-normalisation of pixel centres is off by up to
  ~2e-5 of a pixel at 256 px, so the result would only be approximately a flip);
* scaling by a factor ``s`` (isotropic) in nnU-Net's convention: the sampling coordinates are
  multiplied by ``s`` about the image centre, so ``s > 1`` makes the anatomy appear SMALLER (zoom
  out, areas scale by ``1 / s**2``) and ``s < 1`` larger;
* rotation (up to ``max_rotate_deg``, counter-clockwise as displayed);
* elastic deformation (``elasticdeform`` semantics: N(0, sigma) pixel displacements on a
  ``points x points`` control grid whose corner points sit on the image corners, upsampled
  bicubically to full resolution), added to the affine grid.

Intensity (after the spatial step, in this order; each one vectorised over the samples selected for
it, computed in float32 and written back once):

* Gaussian noise ``x + N(0, std)``, ``std`` uniform in ``noise_std`` per sample (nnU-Net v2 draws its
  ``noise_variance`` (0, 0.1) and uses it as the std of z-scored data; 0.03 of our [0, 1] HU window is
  ~14 HU). The noise field of a sample comes from its own seed (drawn from the generator), generated
  on the CPU and moved to the device: same noise on CPU and CUDA, independent of the rest of the batch;
* Gaussian blur with per-sample, per-axis sigmas (nnU-Net v2 ``synchronize_axes=False``), separable:
  one grouped conv over the batch per axis, reflect padding, kernel radius ``ceil(3 * max sigma)``
  (nnU-Net's kernel size is ~6 sigma), normalised so a constant image stays constant;
* multiplicative brightness ``x * f`` (nnU-Net ``MultiplicativeBrightnessTransform``). Our [0, 1] data
  has its zero at the window's lower bound, so this also shifts the mean; contrast below does not;
* contrast ``(x - mean) * f + mean`` clipped to the sample's original [min, max] (nnU-Net
  ``ContrastTransform`` with ``preserve_range=True``);
* simulated low resolution: nearest-exact downsampling to ``round(z * H) x round(z * W)`` then
  bilinear upsampling back (``align_corners=False``), ``z`` per sample, same for both axes. This is
  what nnU-Net v2 (batchgeneratorsv2) does; nnU-Net v1 / batchgenerators used order-0 down and CUBIC
  (order 3) up. The per-sample sizes differ, so instead of a per-sample ``interpolate`` loop both steps
  are written as per-sample gathers + lerps along H then W, with indices and weights computed on the
  CPU the way PyTorch's float32 CPU kernels do (same nearest indices, results within ~1e-6 of
  ``F.interpolate``); zoom 1 (or a size that rounds back to H x W) leaves the sample untouched;
* inverted gamma then gamma (nnU-Net applies the inverted pass first, p 0.1, then the plain one, p 0.3;
  here two independent probabilities): min-max rescale the sample to [0, 1], ``x ** g``, rescale back,
  then restore the sample's original mean and std (``retain_stats=True``); the inverted pass does this
  on ``-x`` (``1 - gamma(1 - x)`` on the rescaled sample);
* the original ``image * scale + shift`` (``p_intensity``), last.

Contrast/gamma statistics (mean, std, min, max) are per sample AND channel as in nnU-Net; the random
factor is per sample (nnU-Net draws one per channel; identical for our single-channel input).
nnU-Net's per-channel probabilities (``p_per_channel`` 0.5 for blur and low resolution) are not
modelled: here the probability is per sample. Brightness, contrast and gamma factors are drawn the
nnU-Net ("BGContrast") way: when the range straddles 1, half the samples are drawn uniformly below 1
and half above (for [0.75, 1.25] this is simply uniform; for gamma [0.7, 1.5] it is not).

Each transform has its own probability, drawn independently per sample. Samples selected for no
spatial transform are returned bit-identical (they are not resampled at all), samples selected for
no intensity transform are not touched by that stage, and a transform with zero magnitude
(``max_rotate_deg == 0``, ``elastic_sigma == 0``, a range of [1, 1] for scaling, brightness, contrast
or gamma, ``noise_std`` [0, 0]) is treated as not selected.

All random parameters are drawn on the CPU from a CPU ``torch.Generator`` (always the same number
of draws, whatever the probabilities: new parameters are drawn after the original ones, so the
original parameters and therefore the ``default`` recipe reproduce earlier runs) and then moved to
the device, so a seed reproduces the same augmentation on CPU and CUDA. All arithmetic runs in
float32 with autocast disabled; outputs keep the input shapes, dtypes, device and memory format
(channels_last is preserved).

Why batched here and not MONAI's / nnU-Net's per-sample transforms: those run per sample in the
data-loader workers. Batched here, rotation + elastic + intensity on 8 x 1 x 256 x 256 takes ~9 ms on
2 CPU cores vs ~150 ms for MONAI per-sample ``RandRotated`` + ``Rand2DElasticd`` (~16x, measured when
this module was written); on CUDA it keeps the CPU workers free, and every new transform costs a
few batched kernels instead of a Python loop over samples (the one exception: each noised sample's
field is one CPU ``randn`` call, so that it is reproducible across devices). On 2 CPU cores, 8 x 1 x 256 x 256
takes ~9-11 ms with the ``default`` recipe and ~11-14 ms with the ``nnunet`` recipe (8 x 1 x 128 x 128:
~3-5 vs ~6-8 ms; measured side by side on a shared machine when the nnU-Net transforms were added).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from lits.core.errors import LitsError

__all__ = ["AugmentConfig", "AugmentParams", "BatchAugment"]

_PROBABILITIES = (
    "p_rotate", "p_elastic", "p_intensity", "p_scale", "p_mirror_x", "p_mirror_y", "p_noise", "p_blur",
    "p_brightness", "p_contrast", "p_lowres", "p_gamma", "p_gamma_invert",
)  # fmt: skip
_BLUR_TRUNCATE = 3.0  # kernel radius = ceil(3 * sigma), nnU-Net's kernel size is ~6 sigma
_GAMMA_EPS = 1e-7  # nnU-Net's clamp for the range / std divisions


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


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation knobs (the ``augment`` config group). Probabilities are per sample.

    Every probability added after the original rotate/elastic/intensity set defaults to 0, so the
    defaults reproduce the original recipe; ``configs/augment/nnunet.yaml`` holds the nnU-Net v2 values.
    """

    enabled: bool = True
    p_rotate: float = 0.5
    max_rotate_deg: float = 15.0
    p_elastic: float = 0.3
    elastic_sigma: float = 25.0  # std of control-point displacements, in pixels
    elastic_points: int = 3  # control grid is points x points, upsampled bicubically to the image
    p_intensity: float = 0.5
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift: tuple[float, float] = (-0.1, 0.1)
    # spatial, nnU-Net v2
    p_scale: float = 0.0
    scale_range: tuple[float, float] = (0.7, 1.4)  # nnU-Net convention: s > 1 makes the anatomy smaller
    p_mirror_x: float = 0.0  # flip along the width
    p_mirror_y: float = 0.0  # flip along the height
    # intensity, nnU-Net v2 (in the order applied)
    p_noise: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.03)  # in image units ([0, 1] HU window by default)
    p_blur: float = 0.0
    blur_sigma: tuple[float, float] = (0.5, 1.0)  # pixels, drawn per axis
    p_brightness: float = 0.0
    brightness_range: tuple[float, float] = (0.75, 1.25)  # x * f
    p_contrast: float = 0.0
    contrast_range: tuple[float, float] = (0.75, 1.25)  # (x - mean) * f + mean, clipped to [min, max]
    p_lowres: float = 0.0
    lowres_zoom: tuple[float, float] = (0.5, 1.0)  # nearest-exact down to zoom * size, bilinear back up
    p_gamma_invert: float = 0.0  # inverted gamma pass (applied before the plain one, as nnU-Net)
    p_gamma: float = 0.0
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

    @classmethod
    def from_mapping(cls, m: Any) -> AugmentConfig:
        """Build from a dict or an OmegaConf ``DictConfig``; an unknown key raises ``LitsError`` naming it."""
        if m is None:
            return cls()
        try:  # OmegaConf is a dependency of the app (Hydra) but not of this module
            from omegaconf import DictConfig, OmegaConf

            if isinstance(m, DictConfig):
                m = OmegaConf.to_container(m, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        if not isinstance(m, Mapping):
            raise LitsError(f"augment config must be a mapping of keys to values, got {type(m).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = [str(k) for k in m if k not in known]
        if unknown:
            raise LitsError(
                f"unknown augment config key(s) {', '.join(map(repr, unknown))}; valid keys are: {', '.join(known)}"
            )
        return cls(**dict(m))


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


def _lowres_axis(length: int, zoom: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample indices and weight along one axis of nearest-exact down to round(zoom * length), then
    linear (align_corners=False) back up: out[i] = (1 - w[i]) * x[i0[i]] + w[i] * x[i1[i]].

    Index arithmetic follows PyTorch's CPU float32 kernels: nearest-exact floor(float32((i + 0.5) * s))
    with s = float32(L / l); linear source float32(s' * (i + 0.5) - 0.5) (one rounding, as with fma)
    clamped at 0. Returns (m, L) int64, (m, L) int64, (m, L) float32, all on the CPU.
    """
    m = zoom.numel()
    small = torch.tensor([max(1, round(float(z) * length)) for z in zoom.tolist()], dtype=torch.float32).view(m, 1)
    big = torch.tensor(float(length), dtype=torch.float32)
    # linear upsampling l -> L: source coordinate of each output pixel in the small image
    up = (small / big).double() * (torch.arange(length, dtype=torch.float64) + 0.5) - 0.5
    src = up.float().clamp(min=0)
    j0 = src.floor().clamp(max=small - 1)
    w = (src - j0).clamp(0.0, 1.0)
    j1 = torch.minimum(j0 + 1, small - 1)
    # nearest-exact downsampling L -> l: original index of small-image pixel j
    down = big / small

    def orig(j: torch.Tensor) -> torch.Tensor:
        return torch.floor(((j + 0.5).double() * down.double()).float()).clamp(max=length - 1).long()

    same = (small == big).expand(m, length)  # size unchanged: identity, exactly
    ident = torch.arange(length).expand(m, length)
    i0 = torch.where(same, ident, orig(j0))
    i1 = torch.where(same, ident, orig(j1))
    return i0, i1, torch.where(same, torch.zeros(()), w)


class BatchAugment(torch.nn.Module):
    """Augment a whole (image, label) batch on its device; see the module docstring."""

    def __init__(self, cfg: AugmentConfig):
        super().__init__()
        self.cfg = cfg

    def extra_repr(self) -> str:
        return repr(self.cfg)

    # ------------------------------------------------------------------ random parameters
    def sample_params(self, batch: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the per-sample parameters on the CPU (fixed number of draws, so streams stay stable).

        The original parameters are drawn first, in their original order; the nnU-Net additions follow.
        """
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("BatchAugment needs a CPU torch.Generator (parameters are drawn on the CPU)")
        c = self.cfg
        g = generator
        p = c.elastic_points

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(batch, *shape, generator=g, dtype=torch.float64)

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * rand(*shape)

        def coin(prob: float) -> torch.Tensor:
            return torch.rand(batch, generator=g) < prob

        def factor(lo_hi: tuple[float, float]) -> torch.Tensor:
            side, u = rand(), rand()
            return _nnunet_factor(*lo_hi, side, u).float()

        rotate = coin(c.p_rotate)
        angle = uniform(-c.max_rotate_deg, c.max_rotate_deg).float()
        elastic = coin(c.p_elastic)
        disp = torch.randn(batch, 2, p, p, generator=g) * c.elastic_sigma
        intensity = coin(c.p_intensity)
        scale = uniform(*c.intensity_scale).float()
        shift = uniform(*c.intensity_shift).float()
        # ---- nnU-Net v2 additions (drawn after the original parameters)
        scaling = coin(c.p_scale)
        scale_factor = uniform(*c.scale_range).float()
        mirror_x = coin(c.p_mirror_x)
        mirror_y = coin(c.p_mirror_y)
        noise = coin(c.p_noise)
        noise_std = uniform(*c.noise_std).float()
        noise_seed = torch.randint(0, 2**62, (batch,), generator=g, dtype=torch.int64)
        blur = coin(c.p_blur)
        blur_sigma = uniform(*c.blur_sigma, 2).float()
        brightness = coin(c.p_brightness)
        brightness_factor = factor(c.brightness_range)
        contrast = coin(c.p_contrast)
        contrast_factor = factor(c.contrast_range)
        lowres = coin(c.p_lowres)
        lowres_zoom = uniform(*c.lowres_zoom).float()
        gamma_invert = coin(c.p_gamma_invert)
        gamma_invert_value = factor(c.gamma_range)
        gamma = coin(c.p_gamma)
        gamma_value = factor(c.gamma_range)
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

    # ------------------------------------------------------------------ forward
    def forward(
        self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B, C, H, W) float, label (B, H, W) integer (or bool) -> same shapes, dtypes, device.

        Random parameters come from the CPU ``generator`` (None: the global RNG). Returns the inputs
        themselves when ``cfg.enabled`` is False.
        """
        if not self.cfg.enabled:
            return image, label
        return self.apply_params(image, label, self.sample_params(image.shape[0], generator))

    @staticmethod
    def _check(image: torch.Tensor, label: torch.Tensor) -> None:
        if image.dim() != 4 or not image.is_floating_point():
            raise ValueError(f"image must be a float (B, C, H, W) tensor, got {tuple(image.shape)} {image.dtype}")
        lab_shape = tuple(label.shape) if label.dim() == 3 else None
        if lab_shape != (image.shape[0], *image.shape[2:]):
            raise ValueError(
                f"label must be (B, H, W) = {(image.shape[0], *image.shape[2:])} to match image "
                f"{tuple(image.shape)}, got {tuple(label.shape)}"
            )
        if label.is_floating_point() or label.is_complex():
            raise ValueError(f"label must be an integer or bool tensor, got {label.dtype}")
        if label.device != image.device:
            raise ValueError(f"image on {image.device} but label on {label.device}")

    def apply_params(
        self, image: torch.Tensor, label: torch.Tensor, params: AugmentParams
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply explicit parameters (used by ``forward``; tests call it to force angles/displacements)."""
        self._check(image, label)
        dev = image.device
        b, _, h, w = image.shape
        resample = (params.rotate | params.elastic | params.scaling).cpu()  # these need a sampling grid
        mirror_x, mirror_y = params.mirror_x.cpu(), params.mirror_y.cpu()
        sel = torch.nonzero(resample).flatten()  # CPU indices: no device sync
        n = sel.numel()
        # samples whose only spatial transform is mirroring are flipped directly: exact, no resampling
        flips = [
            (torch.nonzero(mask & ~resample).flatten(), dims)
            for mask, dims in (
                (mirror_x & ~mirror_y, (-1,)),
                (mirror_y & ~mirror_x, (-2,)),
                (mirror_x & mirror_y, (-2, -1)),
            )
        ]
        flips = [(idx, dims) for idx, dims in flips if idx.numel()]

        out_img, out_lab = image, label
        if n or flips:
            out_img = torch.empty_like(image)  # preserves channels_last
            out_lab = torch.empty_like(label)
            if n < b and not (len(flips) == 1 and flips[0][0].numel() == b):
                out_img.copy_(image)
                out_lab.copy_(label)
        for idx, dims in flips:
            # negative dims: the same spatial axes of the (B, C, H, W) image and the (B, H, W) label
            if idx.numel() == b:
                out_img.copy_(image.flip(dims))
                out_lab.copy_(label.flip(dims))
            else:
                idx_dev = idx.to(dev, non_blocking=True)
                out_img.index_copy_(0, idx_dev, image.index_select(0, idx_dev).flip(dims))
                out_lab.index_copy_(0, idx_dev, label.index_select(0, idx_dev).flip(dims))
        if n:
            every = n == b
            sel_dev = sel.to(dev, non_blocking=True)
            with torch.autocast(device_type=dev.type, enabled=False):
                grid = self._grid(params, sel, h, w, dev)  # (n, H, W, 2) float32
                img_in = image if every else image.index_select(0, sel_dev)
                lab_in = label if every else label.index_select(0, sel_dev)
                warped = F.grid_sample(
                    img_in.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
                )
                warped_lab = F.grid_sample(
                    lab_in.unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
                ).squeeze(1)
            if every:
                out_img.copy_(warped)
                out_lab.copy_(warped_lab)  # nearest samples exact label values: the cast is lossless
            else:
                out_img.index_copy_(0, sel_dev, warped.to(image.dtype))
                out_lab.index_copy_(0, sel_dev, warped_lab.to(label.dtype))

        out_img = self._nnunet_intensity(out_img, image, params)

        isel = torch.nonzero(params.intensity.cpu()).flatten()
        if isel.numel():
            if out_img is image:
                out_img = image.clone()
            scale = params.scale.cpu()[isel].to(dev, out_img.dtype, non_blocking=True).view(-1, 1, 1, 1)
            shift = params.shift.cpu()[isel].to(dev, out_img.dtype, non_blocking=True).view(-1, 1, 1, 1)
            if isel.numel() == b:
                out_img.mul_(scale).add_(shift)
            else:
                isel_dev = isel.to(dev, non_blocking=True)
                out_img.index_copy_(0, isel_dev, out_img.index_select(0, isel_dev) * scale + shift)
        return out_img, out_lab

    # ------------------------------------------------------------------ spatial
    @staticmethod
    def _grid(params: AugmentParams, sel: torch.Tensor, h: int, w: int, dev: torch.device) -> torch.Tensor:
        """One float32 sampling grid (n, H, W, 2) for the selected samples: mirror, scale, rotation, elastic.

        ``grid_sample`` reads output pixel p from input location grid[p], so for a display-CCW rotation
        by a we sample the input at R(-a) p, here written in normalised coordinates with the
        aspect-ratio correction that makes it a true rotation in pixel space for H != W. Scaling
        multiplies the sampled coordinates by s (s > 1: a larger input region fills the output, the
        anatomy appears smaller), and mirroring negates them (a flip of the input, applied before the
        other transforms; used only together with them, a mirror-only sample is flipped directly).
        """
        n = sel.numel()
        rot = params.rotate.cpu()[sel]
        a = torch.deg2rad(params.angle_deg.cpu()[sel].double()) * rot.double()
        sc = torch.where(params.scaling.cpu()[sel], params.scale_factor.cpu()[sel].double(), 1.0)
        # Pixel space (x right, y down): display-CCW by `a` maps source (xs, ys) to
        # (c*xs + s*ys, -s*xs + c*ys); the grid needs the inverse: xs = c*x - s*y, ys = s*x + c*y.
        c, s = torch.cos(a), torch.sin(a)
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = c * sc
        theta[:, 0, 1] = -s * (h / w) * sc
        theta[:, 1, 0] = s * (w / h) * sc
        theta[:, 1, 1] = c * sc
        theta = theta.float().to(dev, non_blocking=True)
        grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
        if params.displacement is not None:
            el = params.elastic.cpu()[sel]
            if bool(el.any()):
                d = params.displacement.cpu()[sel].float() * el.view(-1, 1, 1, 1)
                # pixels -> normalised units (align_corners=False: 2 units span W resp. H pixels)
                d = d * torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
                d = d.to(dev, non_blocking=True)
                # control points sit on the corner pixels (elasticdeform), hence align_corners=True here
                d = F.interpolate(d, size=(h, w), mode="bicubic", align_corners=True)
                grid = grid + d.permute(0, 2, 3, 1)
        mx, my = params.mirror_x.cpu()[sel], params.mirror_y.cpu()[sel]
        if bool((mx | my).any()):
            sign = torch.stack([1.0 - 2.0 * mx.float(), 1.0 - 2.0 * my.float()], dim=1)  # (n, 2): -1 = mirrored
            grid = grid * sign.to(dev, non_blocking=True).view(n, 1, 1, 2)
        return grid

    # ------------------------------------------------------------------ intensity
    def _nnunet_intensity(self, out_img: torch.Tensor, image: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Noise, blur, brightness, contrast, low resolution, inverted gamma, gamma (see the module docstring).

        Works in float32 on the samples selected for any of them and writes them back once.
        """
        dev = out_img.device
        b, _, h, w = out_img.shape
        lowres = params.lowres.cpu().clone()
        if bool(lowres.any()):  # a zoom that rounds back to H x W is the identity: not selected
            z = params.lowres_zoom.cpu().double()
            lowres &= (torch.round(z * h) != h) | (torch.round(z * w) != w)
        # (mask, function) in the order applied
        steps = [
            (params.noise.cpu(), self._noise),
            (params.blur.cpu(), self._blur),
            (params.brightness.cpu(), self._brightness),
            (params.contrast.cpu(), self._contrast),
            (lowres, self._lowres),
            (params.gamma_invert.cpu(), self._gamma_invert),
            (params.gamma.cpu(), self._gamma),
        ]
        union = torch.zeros(b, dtype=torch.bool)
        for mask, _ in steps:
            union |= mask
        u = torch.nonzero(union).flatten()
        if not u.numel():
            return out_img
        every = u.numel() == b
        u_dev = u.to(dev, non_blocking=True)
        with torch.autocast(device_type=dev.type, enabled=False):
            if every:
                x = out_img.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
            else:
                x = out_img.index_select(0, u_dev).to(torch.float32, memory_format=torch.contiguous_format)
            for mask, fn in steps:
                local = torch.nonzero(mask[u]).flatten()  # positions within x
                if not local.numel():
                    continue
                glob = u[local]  # positions within the batch, to read the parameters
                if local.numel() == x.shape[0]:
                    x = fn(x, params, glob)
                else:
                    local_dev = local.to(dev, non_blocking=True)
                    x.index_copy_(0, local_dev, fn(x.index_select(0, local_dev), params, glob))
        if out_img is image:
            out_img = torch.empty_like(image)  # preserves channels_last
            if not every:
                out_img.copy_(image)
        if every:
            out_img.copy_(x)
        else:
            out_img.index_copy_(0, u_dev, x.to(out_img.dtype))
        return out_img

    @staticmethod
    def _per_sample(values: torch.Tensor, idx: torch.Tensor, dev: torch.device) -> torch.Tensor:
        """(len(idx), 1, 1, 1) float32 on ``dev`` from a (B,) CPU parameter tensor."""
        return values.cpu()[idx].float().to(dev, non_blocking=True).view(-1, 1, 1, 1)

    def _noise(self, x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        # each sample's field from its own seed, drawn on the CPU: identical on CPU and CUDA and
        # independent of the batch composition (a small loop: one randn call per selected sample)
        fields_ = [
            torch.randn(c, h, w, generator=torch.Generator().manual_seed(int(seed)))
            for seed in params.noise_seed.cpu()[idx].tolist()
        ]
        noise = torch.stack(fields_).to(x.device, non_blocking=True)
        return x + noise * self._per_sample(params.noise_std, idx, x.device)

    def _blur(self, x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
        m, c, h, w = x.shape
        sigma = params.blur_sigma.cpu()[idx].double().view(m, 2)
        # one radius for the batch: from the config range (so a sample's result does not depend on
        # the others), widened if forced parameters exceed it; reflect padding needs radius < size
        top = max(self.cfg.blur_sigma[1], float(sigma.max()))
        radius = math.ceil(_BLUR_TRUNCATE * top)
        for axis, size in ((0, h), (1, w)):
            r = min(radius, size - 1)
            if r <= 0:
                continue
            t = torch.arange(-r, r + 1, dtype=torch.float64)
            k = torch.exp(-0.5 * (t.view(1, -1) / sigma[:, axis : axis + 1]) ** 2)
            k = (k / k.sum(dim=1, keepdim=True)).float().repeat_interleave(c, dim=0)  # (m*C, 2r+1)
            k = k.to(x.device, non_blocking=True)
            flat = x.reshape(1, m * c, h, w)
            if axis == 0:
                flat = F.conv2d(F.pad(flat, (0, 0, r, r), mode="reflect"), k.view(m * c, 1, 2 * r + 1, 1), groups=m * c)
            else:
                flat = F.conv2d(F.pad(flat, (r, r, 0, 0), mode="reflect"), k.view(m * c, 1, 1, 2 * r + 1), groups=m * c)
            x = flat.view(m, c, h, w)
        return x

    def _brightness(self, x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
        return x * self._per_sample(params.brightness_factor, idx, x.device)

    def _contrast(self, x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
        f = self._per_sample(params.contrast_factor, idx, x.device)
        mean = x.mean(dim=(2, 3), keepdim=True)
        lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
        return torch.minimum(torch.maximum((x - mean) * f + mean, lo), hi)

    def _lowres(self, x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
        m, c, h, w = x.shape
        zoom = params.lowres_zoom.cpu()[idx].double()
        dev = x.device
        # along H: rows, then along W: columns (separable: nearest-exact down + bilinear up)
        i0, i1, wy = (t.to(dev, non_blocking=True) for t in _lowres_axis(h, zoom))
        j0, j1, wx = (t.to(dev, non_blocking=True) for t in _lowres_axis(w, zoom))
        size = (m, c, h, w)
        wy = wy.view(m, 1, h, 1)
        x = torch.lerp(x.gather(2, i0.view(m, 1, h, 1).expand(size)), x.gather(2, i1.view(m, 1, h, 1).expand(size)), wy)
        wx = wx.view(m, 1, 1, w)
        return torch.lerp(
            x.gather(3, j0.view(m, 1, 1, w).expand(size)), x.gather(3, j1.view(m, 1, 1, w).expand(size)), wx
        )

    def _gamma_invert(self, x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
        return -self._gamma_retain_stats(-x, self._per_sample(params.gamma_invert_value, idx, x.device))

    def _gamma(self, x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
        return self._gamma_retain_stats(x, self._per_sample(params.gamma_value, idx, x.device))

    @staticmethod
    def _gamma_retain_stats(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """nnU-Net GammaTransform with retain_stats: per (sample, channel) min-max to [0, 1], ** g, back,
        then the original mean and std restored."""
        std, mean = torch.std_mean(x, dim=(2, 3), keepdim=True)
        lo = x.amin(dim=(2, 3), keepdim=True)
        rng = x.amax(dim=(2, 3), keepdim=True) - lo
        y = ((x - lo) / rng.clamp(min=_GAMMA_EPS)).pow(g) * rng + lo
        std_y, mean_y = torch.std_mean(y, dim=(2, 3), keepdim=True)
        return (y - mean_y) * (std / std_y.clamp(min=_GAMMA_EPS)) + mean
