"""The phantom's canvas: the voxel grid in anatomical mm, the image being painted, the voxels organs
have claimed, the liver and tumour label masks, and the shape primitives organs are drawn with."""

from __future__ import annotations

import math

import numpy as np

from lits.core.config.synthetic import SyntheticParams
from lits.data.synthetic.fields import capsule_distance2, smooth_field

_REF_FOV_MM = 360.0  # anatomy lengths below are in mm for this field of view
REF_SIZE = 256  # in-plane size the z geometry is calibrated for
_REF_SLICES = 60.0  # mean slice count the z geometry is calibrated for
REF_SPACING_XY = _REF_FOV_MM / REF_SIZE  # in-plane mm at which num_slices x spacing_z is the z extent
_MIN_SLICES = 12  # fewest slices of a case: room for the liver and liver-free slices at both ends


class Canvas:
    """One case's grid and arrays. Coordinates are mm relative to the FOV centre: u along X (towards
    the patient's left), v along Y (towards posterior), w along Z (superior, 0 at the first slice).

    The constructor draws the slice count and spacings from ``rng`` (the first draws of a case).
    ``img`` is HU (float32, air to start with); ``occ`` marks voxels an organ has claimed, so later
    organs paint around earlier ones; ``liver`` and ``tumor`` are the label masks."""

    def __init__(self, rng: np.random.Generator, p: SyntheticParams):
        self.rng = rng
        self.p = p
        n = int(p.size)
        self.nz = int(rng.integers(p.num_slices[0], p.num_slices[1] + 1))
        self.s = float(rng.uniform(*p.spacing_xy))
        self.sz_true = float(rng.uniform(*p.spacing_z))
        # The scan's z extent follows the body, which is drawn to fit the FOV: num_slices x spacing_z is the extent
        # of a body framed at REF_SPACING_XY, scaled by the in-plane spacing drawn. Thin-slice scans cover the
        # same extent with proportionally more slices.
        extent = self.nz * self.sz_true * self.s / REF_SPACING_XY
        if rng.random() < p.thin_slice_fraction:
            self.sz_true = float(rng.uniform(*p.thin_spacing_z))
        self.nz = max(_MIN_SLICES, int(round(extent / self.sz_true)))
        # Anatomy is built in "anatomical mm": in-plane it scales with the FOV (factor g below);
        # along z the slice spacing is rescaled by size/256 and by 60/mean(num_slices), so that a
        # smaller `size` or fewer slices give the same phantom sampled more coarsely (same label
        # fractions per slice and per volume) rather than a squashed or truncated patient.
        # With the default size and num_slices this is the identity.
        self.sz = self.sz_true * (n / REF_SIZE) * (_REF_SLICES / (0.5 * (p.num_slices[0] + p.num_slices[1])))
        self.n = n
        self.shape = (n, n, self.nz)
        self.fov = n * self.s
        self.g = self.fov / _REF_FOV_MM  # anatomy scale
        c = (np.arange(n) - (n - 1) / 2.0) * self.s
        self.u = c.astype(np.float32)
        self.v = c.astype(np.float32)
        self.w = (np.arange(self.nz) * self.sz).astype(np.float32)
        self.zext = self.nz * self.sz
        self.img = np.full(self.shape, -1000.0, dtype=np.float32)
        self.occ = np.zeros(self.shape, dtype=bool)  # voxels claimed by an organ
        self.liver = np.zeros(self.shape, dtype=bool)
        self.tumor = np.zeros(self.shape, dtype=bool)

    def crop(self, lo, hi):
        """Voxel box covering the mm box [lo, hi] -> (slices, U, V, W) broadcastable, or None."""
        sl, cs = [], []
        for ax, arr in enumerate((self.u, self.v, self.w)):
            i0 = int(np.searchsorted(arr, lo[ax], "left"))
            i1 = int(np.searchsorted(arr, hi[ax], "right"))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
            cs.append(arr[i0:i1])
        return tuple(sl), cs[0][:, None, None], cs[1][None, :, None], cs[2][None, None, :]

    def ellipsoid(self, center, axes, angle=0.0, deform=0.0, deform_scale=30.0, margin=1.0):
        """Normalised radius q (q < 1 inside) of an in-plane-rotated ellipsoid, optionally
        deformed by a smooth field, in its bounding crop. Returns (slices, q, U, V, W) or None."""
        ext = np.array(axes, dtype=float) * margin * (1.0 + 2.0 * deform)
        r = max(ext[0], ext[1])
        lo = (center[0] - r, center[1] - r, center[2] - ext[2])
        hi = (center[0] + r, center[1] + r, center[2] + ext[2])
        box = self.crop(lo, hi)
        if box is None:
            return None
        sl, U, V, W = box
        du, dv, dw = U - np.float32(center[0]), V - np.float32(center[1]), W - np.float32(center[2])
        if angle:
            ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
            du, dv = du * ca + dv * sa, dv * ca - du * sa
        q = (du / np.float32(axes[0])) ** 2 + (dv / np.float32(axes[1])) ** 2 + (dw / np.float32(axes[2])) ** 2
        q = np.sqrt(q)
        if deform:
            f = smooth_field(self.rng, (U.ravel(), V.ravel(), W.ravel()), deform_scale * self.g)
            q = q * (1.0 + np.float32(deform) * f)
        return sl, q, U, V, W

    def capsule(self, p0, p1, r0, r1, shell=None):
        """Tapered capsule (segment p0->p1, radius r0->r1) -> (slices, mask) or None; with
        ``shell`` (mm) -> (slices, mask, lumen mask) where the lumen is the capsule shrunk by shell."""
        p0 = np.asarray(p0, dtype=np.float32)
        p1 = np.asarray(p1, dtype=np.float32)
        rmax = max(r0, r1)
        box = self.crop(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
        if box is None:
            return None
        sl, U, V, W = box
        dist2, t = capsule_distance2(U, V, W, p0, p1)
        r = np.float32(r0) + np.float32(r1 - r0) * t
        if shell is None:
            return sl, dist2 <= r * r
        ri = np.maximum(r - np.float32(shell), 0)
        return sl, dist2 <= r * r, dist2 <= ri * ri

    def paint(self, sl, mask, value, claim=True, where=None):
        """img[sl][mask & where] = value (scalar or crop-shaped array); optionally claim voxels."""
        if where is not None:
            mask = mask & where[sl]
        if claim:
            mask = mask & ~self.occ[sl]
        np.copyto(self.img[sl], np.asarray(value, dtype=np.float32), where=mask)
        if claim:
            self.occ[sl] |= mask
        return mask

    def u2i(self, pt):
        """mm point -> voxel index tuple (clipped)."""
        i = int(round(pt[0] / self.s + (self.n - 1) / 2.0))
        j = int(round(pt[1] / self.s + (self.n - 1) / 2.0))
        k = int(round(pt[2] / self.sz))
        return (min(max(i, 0), self.n - 1), min(max(j, 0), self.n - 1), min(max(k, 0), self.nz - 1))

    def inside(self, mask, pt) -> bool:
        """Whether mm point ``pt`` lies in the volume and in ``mask`` (at its nearest voxel)."""
        i, j, k = self.u2i(pt)
        in_range = abs(pt[0]) < self.fov / 2 and abs(pt[1]) < self.fov / 2 and 0 <= pt[2] < self.zext
        return bool(in_range and mask[i, j, k])
