"""The spatial step of the batch augmentation: every spatial transform composed into ONE sampling grid.

Images are resampled with one bilinear ``grid_sample`` call, border padding, labels with one nearest
``grid_sample`` call, zero = background padding, so label values never leave their original set:

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
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from lits.train.augment.params import AugmentParams

__all__ = ["affine_grid", "apply_spatial", "sampling_grid", "upsample_bicubic"]


def apply_spatial(image: torch.Tensor, label: torch.Tensor, params: AugmentParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror, scale, rotate and elastically deform the selected samples of a checked (image, label) batch.

    Returns new tensors (same shapes, dtypes, memory format) when any sample is selected, else the inputs
    themselves; unselected samples are copied bit-identical.
    """
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
            grid = sampling_grid(params, sel, h, w, dev)  # (n, H, W, 2) float32
            img_in = image if every else image.index_select(0, sel_dev)
            lab_in = label if every else label.index_select(0, sel_dev)
            warped = F.grid_sample(img_in.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
            warped_lab = F.grid_sample(
                lab_in.unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
            ).squeeze(1)
        if every:
            out_img.copy_(warped)
            out_lab.copy_(warped_lab)  # nearest samples exact label values: the cast is lossless
        else:
            out_img.index_copy_(0, sel_dev, warped.to(image.dtype))
            out_lab.index_copy_(0, sel_dev, warped_lab.to(label.dtype))
    return out_img, out_lab


def sampling_grid(params: AugmentParams, sel: torch.Tensor, h: int, w: int, dev: torch.device) -> torch.Tensor:
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
    grid = affine_grid(theta.float().to(dev, non_blocking=True), h, w)
    if params.displacement is not None:
        el = params.elastic.cpu()[sel]
        if bool(el.any()):
            d = params.displacement.cpu()[sel].float() * el.view(-1, 1, 1, 1)
            # pixels -> normalised units (align_corners=False: 2 units span W resp. H pixels)
            d = d * torch.tensor([2.0 / w, 2.0 / h]).view(1, 2, 1, 1)
            # control points sit on the corner pixels (elasticdeform), hence align_corners=True in the upsampling
            grid.add_(upsample_bicubic(d.to(dev, non_blocking=True), h, w))  # in place: the grid is this call's own
    mx, my = params.mirror_x.cpu()[sel], params.mirror_y.cpu()[sel]
    if bool((mx | my).any()):
        sign = torch.stack([1.0 - 2.0 * mx.float(), 1.0 - 2.0 * my.float()], dim=1)  # (n, 2): -1 = mirrored
        grid.mul_(sign.to(dev, non_blocking=True).view(n, 1, 1, 2))
    return grid


def affine_grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``F.affine_grid(theta, [n, 1, h, w], align_corners=False)`` (to float rounding), as one broadcast sum of an x
    part (n, 1, W, 2) and a y part (n, H, 1, 2): the library's version is a batched matrix product with an inner
    dimension of 3, several times slower on a CPU for the same grid."""
    x = (torch.arange(w, device=theta.device, dtype=theta.dtype) * 2 + 1) / w - 1  # pixel centres, normalised
    y = (torch.arange(h, device=theta.device, dtype=theta.dtype) * 2 + 1) / h - 1
    x_part = x.view(1, 1, w, 1) * theta[:, :, 0].view(-1, 1, 1, 2)
    y_part = y.view(1, h, 1, 1) * theta[:, :, 1].view(-1, 1, 1, 2) + theta[:, :, 2].view(-1, 1, 1, 2)
    return x_part + y_part


def upsample_bicubic(d: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(n, 2, P, Q) control-point displacements -> (n, H, W, 2): ``F.interpolate(d, (h, w), mode="bicubic",
    align_corners=True)`` (to float rounding) as two small matrix products. Bicubic interpolation is separable, and
    from a handful of control points the matrices are a few kilobytes, where the library's kernel walks 16 taps per
    output pixel."""
    rows = _bicubic_matrix(d.shape[-2], h, d.dtype, d.device)  # (H, P)
    cols = _bicubic_matrix(d.shape[-1], w, d.dtype, d.device)  # (W, Q)
    return (rows @ d @ cols.T).permute(0, 2, 3, 1)


@functools.lru_cache(maxsize=16)  # a few (points, size) pairs per run: made once instead of twice per batch
def _bicubic_matrix(points: int, size: int, dtype: torch.dtype, dev: torch.device) -> torch.Tensor:
    """(size, points): row i holds the weights that 1-D bicubic interpolation (align_corners=True, the library's
    kernel and border clamping) gives each control point at output position i, read off by interpolating the unit
    vectors."""
    unit = torch.eye(points, dtype=dtype, device=dev).view(points, 1, points, 1)
    return F.interpolate(unit, size=(size, 1), mode="bicubic", align_corners=True).view(points, size).T
