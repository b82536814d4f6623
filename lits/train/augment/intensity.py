"""The intensity step of the batch augmentation, after the spatial one.

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
modelled: here the probability is per sample. How the brightness, contrast and gamma factors are
drawn: see ``params``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from lits.train.augment.params import AugmentParams

__all__ = ["apply_nnunet_intensity", "apply_scale_shift"]

_BLUR_TRUNCATE = 3.0  # kernel radius = ceil(3 * sigma), nnU-Net's kernel size is ~6 sigma
_GAMMA_EPS = 1e-7  # nnU-Net's clamp for the range / std divisions


def apply_nnunet_intensity(
    out_img: torch.Tensor, image: torch.Tensor, params: AugmentParams, blur_sigma_max: float
) -> torch.Tensor:
    """Noise, blur, brightness, contrast, low resolution, inverted gamma, gamma (see the module docstring).

    Works in float32 on the samples selected for any of them and writes them back once. ``out_img`` is
    the batch after the spatial step and ``image`` the input batch: when they are the same tensor the
    result is a new one, the input is never modified. ``blur_sigma_max`` is the upper end of the
    configured blur sigma range, which sets the blur kernel radius.
    """
    dev = out_img.device
    b, _, h, w = out_img.shape
    lowres = params.lowres.cpu().clone()
    if bool(lowres.any()):  # a zoom that rounds back to H x W is the identity: not selected
        z = params.lowres_zoom.cpu().double()
        lowres &= (torch.round(z * h) != h) | (torch.round(z * w) != w)
    # (mask, function) in the order applied
    steps = [
        (params.noise.cpu(), _noise),
        (params.blur.cpu(), functools.partial(_blur, sigma_max=blur_sigma_max)),
        (params.brightness.cpu(), _brightness),
        (params.contrast.cpu(), _contrast),
        (lowres, _lowres),
        (params.gamma_invert.cpu(), _gamma_invert),
        (params.gamma.cpu(), _gamma),
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


def apply_scale_shift(out_img: torch.Tensor, image: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """The original ``image * scale + shift`` on the samples selected for it (the last intensity transform).

    ``out_img`` is the batch so far and ``image`` the input batch: when they are the same tensor the
    result is a new one, the input is never modified.
    """
    dev = out_img.device
    b = out_img.shape[0]
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
    return out_img


def _per_sample(values: torch.Tensor, idx: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """(len(idx), 1, 1, 1) float32 on ``dev`` from a (B,) CPU parameter tensor."""
    return values.cpu()[idx].float().to(dev, non_blocking=True).view(-1, 1, 1, 1)


def _noise(x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
    _, c, h, w = x.shape
    # each sample's field from its own seed, drawn on the CPU: identical on CPU and CUDA and
    # independent of the batch composition (a small loop: one randn call per selected sample)
    fields_ = [
        torch.randn(c, h, w, generator=torch.Generator().manual_seed(int(seed)))
        for seed in params.noise_seed.cpu()[idx].tolist()
    ]
    noise = torch.stack(fields_).to(x.device, non_blocking=True)
    return x + noise * _per_sample(params.noise_std, idx, x.device)


def _blur(x: torch.Tensor, params: AugmentParams, idx: torch.Tensor, sigma_max: float) -> torch.Tensor:
    m, c, h, w = x.shape
    sigma = params.blur_sigma.cpu()[idx].double().view(m, 2)
    # one radius for the batch: from the config range (so a sample's result does not depend on
    # the others), widened if forced parameters exceed it; reflect padding needs radius < size
    top = max(sigma_max, float(sigma.max()))
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


def _brightness(x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
    return x * _per_sample(params.brightness_factor, idx, x.device)


def _contrast(x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
    f = _per_sample(params.contrast_factor, idx, x.device)
    mean = x.mean(dim=(2, 3), keepdim=True)
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    return torch.minimum(torch.maximum((x - mean) * f + mean, lo), hi)


def _lowres(x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
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
    return torch.lerp(x.gather(3, j0.view(m, 1, 1, w).expand(size)), x.gather(3, j1.view(m, 1, 1, w).expand(size)), wx)


def _gamma_invert(x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
    return -_gamma_retain_stats(-x, _per_sample(params.gamma_invert_value, idx, x.device))


def _gamma(x: torch.Tensor, params: AugmentParams, idx: torch.Tensor) -> torch.Tensor:
    return _gamma_retain_stats(x, _per_sample(params.gamma_value, idx, x.device))


def _gamma_retain_stats(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """nnU-Net GammaTransform with retain_stats: per (sample, channel) min-max to [0, 1], ** g, back,
    then the original mean and std restored."""
    std, mean = torch.std_mean(x, dim=(2, 3), keepdim=True)
    lo = x.amin(dim=(2, 3), keepdim=True)
    rng = x.amax(dim=(2, 3), keepdim=True) - lo
    y = ((x - lo) / rng.clamp(min=_GAMMA_EPS)).pow(g) * rng + lo
    std_y, mean_y = torch.std_mean(y, dim=(2, 3), keepdim=True)
    return (y - mean_y) * (std / std_y.clamp(min=_GAMMA_EPS)) + mean


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
