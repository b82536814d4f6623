"""Synthetic abdominal CT in the LiTS2017 file format: the embedded default data set.

Each case is an upper-abdomen contrast-enhanced (portal-venous phase) CT phantom built from
smooth implicit shapes: body outline with subcutaneous fat and muscle wall, spine with discs and
posterior elements, paraspinal muscles, obliquely cut ribs, aorta and IVC, kidneys, spleen,
stomach with an air-fluid level, gallbladder, bowel loops, lung bases and heart above a
two-domed diaphragm, and the liver (a deformed union of ellipsoids hugging the right abdominal
wall) with branching portal and hepatic veins and 0..max_tumors hypodense, lobulated tumours.
Labels are fixed first; only then is the image blurred (partial volume, anisotropic) and given
correlated scanner noise.

Geometry. Arrays are in NIfTI voxel order (X, Y, Z) with the affine ``diag(-s, -s, sz)`` plus an
origin offset, i.e. the raw LiTS/DICOM convention (voxel axes point to patient Left, Posterior,
Superior; ``nib.aff2axcodes`` gives ``('L', 'P', 'S')``). Voxel i = 0 is the patient's right, so
the liver sits at low X; j = 0 is anterior. Readers must reorient to RAS with the affine.

Anatomy is laid out relative to the field of view (FOV = size * spacing, like a scanner that
fits the FOV to the patient); lengths quoted in mm in the code are for a 360 mm FOV. The z
geometry is calibrated for size 256 and a mean of 60 slices: a smaller ``size`` or
``num_slices`` samples the same phantom more coarsely (about the same label fractions per volume
and per slice), while the affine always reports the spacing actually drawn from ``spacing_xy``
and ``spacing_z``. So at non-default sizes the physical size of the "patient" in the affine is
scaled (a 96-voxel FOV at 1.4 mm is 13 cm wide); mm-based metrics are then self-consistent but
not anatomical.

Determinism: case ``index`` depends only on ``(seed, index)`` through
``np.random.default_rng([seed, index])``; the same inputs give byte-identical arrays.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy import ndimage

from lits.core.errors import LitsError
from lits.core.files import atomic_path, umask

__all__ = [
    "SyntheticParams",
    "generate_case",
    "generate_dataset",
    "save_montage",
    "case_filenames",
    "HU_MIN",
    "HU_MAX",
]

HU_MIN, HU_MAX = -1024, 3071
_COMPRESSLEVEL = 1  # gzip level for .nii.gz: level 1 is ~5x faster than 9 and only ~10% larger
_REF_FOV_MM = 360.0  # anatomy lengths below are in mm for this field of view
_REF_SIZE = 256  # in-plane size the z geometry is calibrated for
_REF_SLICES = 60.0  # mean slice count the z geometry is calibrated for


@dataclass(frozen=True)
class SyntheticParams:
    """Generator settings. Ranges are (low, high) and are drawn uniformly per case (or per
    structure). Every field has a default; tuples may be given as lists (Hydra)."""

    size: int = 256  # in-plane voxels (square)
    num_slices: tuple[int, int] = (48, 72)  # min/max slices per case (inclusive)
    spacing_xy: tuple[float, float] = (1.2, 1.6)  # mm, square pixels, drawn per case
    spacing_z: tuple[float, float] = (2.5, 5.0)  # mm, drawn per case
    tumor_free_fraction: float = 0.12  # probability that a case has no tumour at all
    max_tumors: int = 6
    # --- realism knobs -------------------------------------------------------------------
    liver_hu: tuple[float, float] = (95.0, 135.0)  # enhanced parenchyma, per case
    vessel_contrast_hu: tuple[float, float] = (50.0, 80.0)  # hepatic/portal veins above liver
    tumor_contrast_hu: tuple[float, float] = (20.0, 70.0)  # typical hypodensity below liver
    low_contrast_fraction: float = 0.15  # share of tumours drawn from low_contrast_hu instead
    low_contrast_hu: tuple[float, float] = (8.0, 20.0)
    tumor_diameter_mm: float = 66.0  # median diameter of the dominant tumour (lognormal)
    satellite_diameter_mm: float = 34.0  # median diameter of further tumours
    tumor_diameter_sigma: float = 0.40  # lognormal sigma of tumour diameters
    small_tumor_fraction: float = 0.3  # share of further tumours that are small (hard to detect)
    small_tumor_diameter_mm: float = 10.0  # their median diameter
    tumor_diameter_range_mm: tuple[float, float] = (5.0, 110.0)  # clip
    tumor_band: float = 0.30  # tumour centres lie in a z-band of this fraction of the liver height
    noise_sd_hu: tuple[float, float] = (10.0, 20.0)  # scanner noise sd, per case
    psf_sigma_mm: tuple[float, float] = (0.55, 0.85)  # in-plane partial-volume blur, per case
    slice_profile: float = 0.35  # z blur sigma as a fraction of the slice spacing
    gallbladder_probability: float = 0.75

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

        def bad(name: str, why: str) -> LitsError:
            return LitsError(
                f"synthetic data: invalid setting {name}={getattr(self, name)!r} ({why}); "
                f"fix data.synthetic.{name} in your config or on the command line"
            )

        for name in (
            "num_slices",
            "spacing_xy",
            "spacing_z",
            "liver_hu",
            "vessel_contrast_hu",
            "tumor_contrast_hu",
            "low_contrast_hu",
            "tumor_diameter_range_mm",
            "noise_sd_hu",
            "psf_sigma_mm",
        ):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 2 and v[0] <= v[1]):
                raise bad(name, "expected [low, high] with low <= high")
        if int(self.size) != self.size or self.size < 48:
            raise bad("size", "must be an integer >= 48")
        if self.num_slices[0] < 16:
            raise bad("num_slices", "need at least 16 slices so liver-free slices exist at both ends")
        if self.spacing_xy[0] <= 0 or self.spacing_z[0] <= 0:
            raise bad("spacing_xy" if self.spacing_xy[0] <= 0 else "spacing_z", "must be positive")
        if not 0.0 <= self.tumor_free_fraction <= 1.0:
            raise bad("tumor_free_fraction", "must be within [0, 1]")
        if self.max_tumors < 0:
            raise bad("max_tumors", "must be >= 0")
        for name in ("low_contrast_fraction", "small_tumor_fraction", "gallbladder_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must be within [0, 1]")
        if self.noise_sd_hu[0] < 0:
            raise bad("noise_sd_hu", "must be >= 0")


def case_filenames(index: int) -> tuple[str, str]:
    """LiTS names of case ``index``: ``("volume-N.nii.gz", "segmentation-N.nii.gz")``."""
    return f"volume-{index}.nii.gz", f"segmentation-{index}.nii.gz"


# ----------------------------------------------------------------------------------------------
# small numerical helpers
# ----------------------------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, coords, scale: float) -> np.ndarray:
    """Zero-mean, ~unit-sd smooth random field on the grid spanned by 1-D ascending coordinate
    arrays ``coords`` (mm), correlation length ~``scale`` mm. Separable Gaussian-RBF synthesis:
    random coefficients on a control lattice of spacing ``scale``, contracted with per-axis basis
    matrices one axis at a time. Uses numpy's own einsum loops, not BLAS: single-threaded,
    bit-reproducible whatever the thread settings, and fast at these sizes."""
    mats = []
    norm = 1.0
    for c in coords:
        c = np.asarray(c, dtype=np.float32).ravel()
        n_ctrl = int(math.ceil(float(c[-1] - c[0]) / scale)) + 3
        ctrl = (float(c[0]) - scale + scale * np.arange(n_ctrl)).astype(np.float32)
        basis = np.exp(-(((c[:, None] - ctrl[None, :]) / np.float32(0.7 * scale)) ** 2))
        mats.append(basis)
        norm *= float(np.sqrt(np.mean(np.sum(basis.astype(np.float64) ** 2, axis=1))))
    coef = rng.standard_normal(tuple(m.shape[1] for m in mats)).astype(np.float32)
    if len(mats) == 1:
        out = np.einsum("ia,a->i", mats[0], coef)
    elif len(mats) == 2:
        out = np.einsum("jb,ib->ij", mats[1], np.einsum("ia,ab->ib", mats[0], coef))
    else:
        bu, bv, bw = mats
        t = np.einsum("kc,abc->abk", bw, coef)
        t = np.einsum("jb,abk->ajk", bv, t)
        out = np.einsum("ia,ajk->ijk", bu, t)
    out *= np.float32(1.0 / norm)
    return out


def _rotating_field(rng: np.random.Generator, u, v, w, scale: float) -> np.ndarray:
    """Cheap smooth 3-D field for whole volumes: two 2-D fields blended as cos/sin of a phase
    that advances one radian per ``scale`` mm along w (unit variance everywhere)."""
    f1 = _smooth_field(rng, (u, v), scale)
    f2 = _smooth_field(rng, (u, v), scale)
    phase = np.asarray(w, dtype=np.float32) / np.float32(scale) + np.float32(rng.uniform(0, 2 * np.pi))
    out = f1[:, :, None] * np.cos(phase)[None, None, :]
    out += f2[:, :, None] * np.sin(phase)[None, None, :]
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == int(np.argmax(counts))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


# ----------------------------------------------------------------------------------------------
# the phantom builder
# ----------------------------------------------------------------------------------------------


class _Case:
    """Builds one case. Coordinates are mm relative to the FOV centre: u along X (towards the
    patient's left), v along Y (towards posterior), w along Z (superior, 0 at the first slice)."""

    def __init__(self, rng: np.random.Generator, p: SyntheticParams):
        self.rng = rng
        self.p = p
        n = int(p.size)
        self.nz = int(rng.integers(p.num_slices[0], p.num_slices[1] + 1))
        self.s = float(rng.uniform(*p.spacing_xy))
        self.sz_true = float(rng.uniform(*p.spacing_z))
        # Anatomy is built in "anatomical mm": in-plane it scales with the FOV (factor g below);
        # along z the slice spacing is rescaled by size/256 and by 60/mean(num_slices), so that a
        # smaller `size` or fewer slices give the same phantom sampled more coarsely (same label
        # fractions per slice and per volume) rather than a squashed or truncated patient.
        # With the default size and num_slices this is the identity.
        self.sz = self.sz_true * (n / _REF_SIZE) * (_REF_SLICES / (0.5 * (p.num_slices[0] + p.num_slices[1])))
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

    # -- geometry helpers ------------------------------------------------------------------
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
            f = _smooth_field(self.rng, (U.ravel(), V.ravel(), W.ravel()), deform_scale * self.g)
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
        d = p1 - p0
        l2 = float(d @ d) + 1e-6
        du, dv, dw = U - p0[0], V - p0[1], W - p0[2]
        t = np.clip((du * d[0] + dv * d[1] + dw * d[2]) / np.float32(l2), 0.0, 1.0)
        dist2 = (du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2 + (dw - t * d[2]) ** 2
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
        i, j, k = self.u2i(pt)
        in_range = abs(pt[0]) < self.fov / 2 and abs(pt[1]) < self.fov / 2 and 0 <= pt[2] < self.zext
        return bool(in_range and mask[i, j, k])

    # -- the build -------------------------------------------------------------------------
    def build(self):
        self.plan()
        self.body()
        self.spine()
        self.great_vessels()
        self.thorax()
        self.kidneys()
        self.spleen()
        self.stomach()
        self.gallbladder()
        self.pancreas()
        self.retroperitoneum()
        self.liver_shape()
        self.liver_vessels()
        self.tumors()
        self.bowel()
        self.ribs()
        seg = np.zeros(self.shape, dtype=np.uint8)
        seg[self.liver] = 1
        seg[self.tumor & self.liver] = 2
        vol = self.acquire()
        return vol, seg, self.affine()

    def plan(self):
        rng, g = self.rng, self.g
        # body outline (cross-section constant up to a smooth scale s(w))
        self.a_body = self.fov / 2 * rng.uniform(0.80, 0.90)
        self.b_ant = self.a_body * rng.uniform(0.66, 0.78)
        self.b_post = self.b_ant * rng.uniform(0.88, 1.0)
        self.cu = self.fov * rng.uniform(-0.015, 0.015)
        self.cv = self.fov * rng.uniform(-0.01, 0.05)
        self.t_fat = rng.uniform(0.045, 0.11)
        self.t_fat_ant = rng.uniform(0.0, 0.07)
        self.t_musc = rng.uniform(0.055, 0.08)
        # cavity half-axes at mid-z (approximate; used to place organs)
        self.A = self.a_body * (1 - self.t_fat - self.t_musc - 0.02)
        self.Ba = self.b_ant * (1 - self.t_fat - self.t_fat_ant - self.t_musc)
        self.Bp = self.b_post * (1 - self.t_fat - self.t_musc)
        # liver extent along z, leaving liver-free slices at both ends
        nz, sz = self.nz, self.sz
        self.m_lo = max(2, int(round(0.07 * nz)))  # at least this many liver-free slices at the bottom
        self.m_hi = max(2, int(round(0.07 * nz)))  # and at the top
        avail = (nz - self.m_lo - self.m_hi - 2) * sz
        self.Lz = float(min(rng.uniform(140.0, 185.0) * g, 0.9 * avail))
        lo_top = (self.m_lo + 1) * sz + self.Lz
        hi_top = (nz - 1 - self.m_hi) * sz - 6.0 * g
        self.w_top = float(rng.uniform(lo_top, max(lo_top, hi_top)))  # liver dome apex
        self.w_bot = self.w_top - self.Lz
        self.liver_hu = float(rng.uniform(*self.p.liver_hu))

    def body(self):
        rng, g = self.rng, self.g
        du = (self.u[:, None] - np.float32(self.cu)) / np.float32(self.a_body)
        dv = self.v[None, :] - np.float32(self.cv)
        post = dv > 0
        dvn = np.where(post, dv / np.float32(self.b_post), dv / np.float32(self.b_ant))
        p_post = np.float32(rng.uniform(2.3, 3.0))
        rho_a = np.sqrt(du * du + dvn * dvn)
        adu, adv = np.abs(du), np.abs(dvn)
        rho_p = (adu**p_post + adv**p_post) ** (1 / p_post)
        rho = np.where(post, rho_p, rho_a)
        theta = np.arctan2(dvn, du)
        pert = np.ones_like(rho)
        for k in (2, 3, 4, 5):
            pert += np.float32(rng.normal(0, 0.012)) * np.cos(k * theta + np.float32(rng.uniform(0, 2 * np.pi)))
        rho = rho / pert
        sin_t = dvn / np.maximum(np.sqrt(du * du + dvn * dvn), 1e-6)
        anterior = np.clip(-sin_t, 0, 1)
        lateral = np.clip(np.abs(du) / np.maximum(np.sqrt(du * du + dvn * dvn), 1e-6), 0, 1)
        t_fat = self.t_fat + self.t_fat_ant * anterior + 0.02 * lateral * anterior
        rho_m = rho / (1 - t_fat)
        rho_c = rho / (1 - t_fat - self.t_musc)
        # smooth scale along z: a slightly larger chest at the top
        zf = _smooth_field(rng, (self.w,), 80.0 * g)
        s = (1.0 + 0.025 * zf + 0.03 * (self.w - self.zext / 2) / max(self.zext, 1.0)).astype(np.float32)
        self.body3 = rho[:, :, None] <= s
        musc3 = rho_m[:, :, None] <= s
        self.cav3 = rho_c[:, :, None] <= s
        fat_hu = np.float32(rng.uniform(-115, -90))
        musc_hu = np.float32(rng.uniform(40, 60))
        img = self.img
        img[self.body3] = fat_hu
        img[musc3] = musc_hu
        # visceral fat with mesenteric density variation
        visc = _rotating_field(rng, self.u, self.v, self.w, 10.0 * g)
        visc *= np.float32(18)
        visc += np.float32(rng.uniform(-105, -80))
        np.copyto(img, visc, where=self.cav3)
        self.fat_hu, self.musc_hu = float(fat_hu), float(musc_hu)
        self.rho, self.s_z = rho, s

    def spine(self):
        rng, g = self.rng, self.g
        cu = self.cu + rng.normal(0, 3) * g
        self.vb_a, self.vb_b = rng.uniform(19, 24) * g, rng.uniform(15, 18) * g
        self.v_vb = self.cv + self.Bp - self.vb_b - rng.uniform(8, 14) * g
        v_canal = self.v_vb + self.vb_b + 9 * g
        # paraspinal muscles (in the posterior wall)
        for side in (-1, 1):
            box = self.ellipsoid(
                (cu + side * 33 * g, v_canal + 16 * g, self.zext / 2),
                (27 * g, 24 * g, 10 * self.zext),
                angle=side * 0.15,
            )
            if box:
                sl, q, *_ = box
                self.paint(sl, q < 1, self.musc_hu + rng.uniform(-5, 5), where=self.body3)
        # discs: vertebral height ~ 27 mm + disc ~ 8 mm
        period = rng.uniform(32, 37) * g
        disc = ((self.w - rng.uniform(0, period)) % period) < 8 * g
        box = self.ellipsoid((cu, self.v_vb, self.zext / 2), (self.vb_a, self.vb_b, 10 * self.zext))
        if box:
            sl, q, *_ = box
            cort = np.float32(rng.uniform(450, 700))
            canc = np.float32(rng.uniform(160, 260))
            val = np.where(q < 0.78, canc, cort)
            val = np.where(disc[sl[2]][None, None, :], np.float32(rng.uniform(70, 100)), val)
            self.paint(sl, q < 1, val)
        # spinal canal (CSF) and the bony ring / spinous process behind it
        box = self.ellipsoid((cu, v_canal, self.zext / 2), (13 * g, 12 * g, 10 * self.zext))
        if box:
            sl, q, *_ = box
            ring = np.where(q < 0.68, np.float32(rng.uniform(5, 20)), np.float32(rng.uniform(350, 550)))
            self.paint(sl, q < 1, ring)
        spin_end = self.cv + self.b_post * (1 - self.t_fat) - 14 * g
        for p0, p1, r in (
            ((cu, v_canal + 8 * g, 0), (cu, spin_end, 0), 4.5 * g),
            ((cu - 9 * g, v_canal + 3 * g, 0), (cu - 36 * g, v_canal + 2 * g, 0), 4.0 * g),
            ((cu + 9 * g, v_canal + 3 * g, 0), (cu + 36 * g, v_canal + 2 * g, 0), 4.0 * g),
        ):
            # posterior elements are present only over part of each vertebral period
            box = self.crop(
                (min(p0[0], p1[0]) - r, min(p0[1], p1[1]) - r, 0),
                (max(p0[0], p1[0]) + r, max(p0[1], p1[1]) + r, self.zext),
            )
            if box is None:
                continue
            sl, U, V, W = box
            cap2 = self._segment_mask2d(U[:, :, 0], V[:, :, 0], p0, p1, r)
            present = ((self.w[sl[2]] - period * 0.3) % period) < 0.55 * period
            m = cap2[:, :, None] & present[None, None, :]
            self.paint(sl, m, np.float32(rng.uniform(350, 550)), where=self.body3)
        self.spine_cu, self.v_canal = cu, v_canal

    @staticmethod
    def _segment_mask2d(U, V, p0, p1, r):
        d = np.array([p1[0] - p0[0], p1[1] - p0[1]], dtype=np.float32)
        l2 = float(d @ d) + 1e-6
        du, dv = U - np.float32(p0[0]), V - np.float32(p0[1])
        t = np.clip((du * d[0] + dv * d[1]) / np.float32(l2), 0, 1)
        return (du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2 <= np.float32(r * r)

    def great_vessels(self):
        rng, g = self.rng, self.g
        self.ao_hu = float(rng.uniform(150, 200))
        self.r_ao = r_ao = rng.uniform(9, 12.5) * g
        self.ao = (self.spine_cu + rng.uniform(8, 16) * g, self.v_vb - self.vb_b - r_ao - 2 * g)
        box = self.ellipsoid((self.ao[0], self.ao[1], self.zext / 2), (r_ao, r_ao, 10 * self.zext))
        if box:
            sl, q, *_ = box
            self.paint(sl, q < 1, self.ao_hu)
        self.ivc = (self.spine_cu - rng.uniform(20, 28) * g, self.ao[1] - rng.uniform(2, 8) * g)
        self.ivc_hu = self.ao_hu - rng.uniform(10, 45)
        box = self.ellipsoid(
            (self.ivc[0], self.ivc[1], self.zext / 2),
            (rng.uniform(11, 15) * g, rng.uniform(8, 11) * g, 10 * self.zext),
            angle=0.3,
        )
        if box:
            sl, q, *_ = box
            self.paint(sl, q < 1, self.ivc_hu)

    def thorax(self):
        """Two-domed diaphragm; lung bases and heart above it."""
        rng, g = self.rng, self.g
        U = self.u[:, None] - np.float32(self.cu)
        V = self.v[None, :] - np.float32(self.cv)
        hr = self.w_top + 4 * g
        hl = hr - rng.uniform(5, 22) * g
        ur, vr = -0.45 * self.A + rng.normal(0, 6) * g, rng.normal(0, 8) * g
        ul, vl = 0.42 * self.A + rng.normal(0, 6) * g, rng.normal(0, 8) * g
        kr, kl = rng.uniform(95, 130) * g, rng.uniform(95, 130) * g
        post = np.clip(V, 0, None)
        dr = hr - ((U - ur) ** 2 + (V - vr) ** 2) / (2 * kr) - post**2 / (4 * kr)
        dl = hl - ((U - ul) ** 2 + (V - vl) ** 2) / (2 * kl) - post**2 / (4 * kl)
        self.dome = np.maximum(dr, dl).astype(np.float32)  # diaphragm height D(u, v), mm
        self.dome_above = above = self.w[None, None, :] > self.dome[:, :, None]
        # heart with a pericardial fat rim, resting on the central tendon
        hc = (self.cu + rng.uniform(15, 35) * g, self.cv - 0.35 * self.Ba, max(hr, hl) + rng.uniform(55, 70) * g)
        box = self.ellipsoid(
            hc, (rng.uniform(52, 62) * g, rng.uniform(40, 48) * g, rng.uniform(55, 65) * g), angle=-0.5, margin=1.1
        )
        if box:
            sl, q, *_ = box
            heart = np.where(q < 0.72, np.float32(self.ao_hu - rng.uniform(0, 30)), np.float32(rng.uniform(90, 120)))
            self.paint(sl, q < 1, heart, where=above & self.cav3)
            self.paint(sl, q < 1.09, np.float32(self.fat_hu), where=above & self.cav3)
        # lungs fill the rest of the thoracic cavity above the diaphragm
        lung = above & self.cav3 & ~self.occ
        lung_hu = np.float32(rng.uniform(-880, -820))
        self.img[lung] = lung_hu
        self.occ |= lung
        # pulmonary vessels: short thin bright tubes scattered through the lung bases
        ks = np.nonzero(lung.any(axis=(0, 1)))[0]
        if len(ks):
            w_lo = float(self.w[ks[0]])
            for _ in range(int(rng.integers(30, 60))):
                c = np.array(
                    [
                        self.cu + rng.uniform(-0.9, 0.9) * self.A,
                        self.cv + rng.uniform(-0.8, 0.9) * self.Bp,
                        rng.uniform(w_lo, self.zext),
                    ]
                )
                if not self.inside(lung, c):
                    continue
                d = _unit(rng.normal(size=3)) * rng.uniform(8, 25) * g
                r = rng.uniform(1.0, 2.8) * g
                cap = self.capsule(c - d, c + d, r, 0.6 * r)
                if cap:
                    csl, m = cap
                    np.copyto(self.img[csl], np.float32(rng.uniform(-50, 60)), where=m & lung[csl])
        # diaphragm muscle sheet just below the dome surface
        dia = (~above) & (self.w[None, None, :] > (self.dome - np.float32(5 * g))[:, :, None]) & self.cav3 & ~self.occ
        self.img[dia] = np.float32(self.musc_hu)
        self.occ |= dia

    def kidneys(self):
        rng, g = self.rng, self.g
        w_r = self.w_bot + rng.uniform(-5, 25) * g
        for side, wc in ((-1, w_r), (1, w_r + rng.uniform(10, 30) * g)):
            cu = self.spine_cu + side * rng.uniform(58, 70) * g
            cv = self.v_vb - rng.uniform(-2, 10) * g
            axes = (rng.uniform(20, 25) * g, rng.uniform(28, 34) * g, rng.uniform(48, 58) * g)
            angle = side * rng.uniform(0.35, 0.7)
            box = self.ellipsoid((cu, cv, wc), axes, angle=angle, deform=0.05)
            if not box:
                continue
            sl, q, U, V, W = box
            cortex = np.float32(rng.uniform(150, 200))
            medulla = cortex - np.float32(rng.uniform(10, 45))
            val = np.where(q < 0.72, medulla, cortex)
            # renal sinus fat at the medial hilum
            hu = cu - side * 0.55 * axes[0]
            sinus = ((U - np.float32(hu)) / np.float32(9 * g)) ** 2 + (
                (V - np.float32(cv - 4 * g)) / np.float32(13 * g)
            ) ** 2 + ((W - np.float32(wc)) / np.float32(0.55 * axes[2])) ** 2 < 1
            val = np.where(sinus, np.float32(rng.uniform(-90, -40)), val)
            self.paint(sl, q < 1, val, where=self.cav3)

    def spleen(self):
        rng, g = self.rng, self.g
        c = (self.cu + 0.62 * self.A, self.cv + 0.35 * self.Bp, self.w_top - rng.uniform(0.2, 0.35) * self.Lz)
        box = self.ellipsoid(
            c,
            (rng.uniform(22, 30) * g, rng.uniform(45, 60) * g, rng.uniform(45, 60) * g),
            angle=-rng.uniform(0.5, 0.9),
            deform=0.15,
            deform_scale=30,
        )
        if box:
            sl, q, *_ = box
            hu = np.float32(self.liver_hu + rng.uniform(-10, 15))
            self.paint(sl, q < 1, hu, where=self.cav3)

    def stomach(self):
        rng, g = self.rng, self.g
        c = (self.cu + 0.32 * self.A, self.cv - 0.22 * self.Ba, self.w_top - rng.uniform(0.25, 0.4) * self.Lz)
        axes = (rng.uniform(38, 50) * g, rng.uniform(30, 40) * g, rng.uniform(45, 60) * g)
        box = self.ellipsoid(c, axes, angle=rng.uniform(-0.3, 0.5), deform=0.12, deform_scale=35)
        if not box:
            return
        sl, q, U, V, W = box
        wall = 1 - 4.5 * g / min(axes[:2])
        gas_level = c[1] - axes[1] + rng.uniform(0.0, 0.6) * 2 * axes[1]  # air-fluid level (anterior = gas)
        if rng.random() < 0.5:
            content = np.float32(rng.uniform(0, 30))
        else:  # food: mottled
            content = np.float32(rng.uniform(20, 50)) + np.float32(25) * _smooth_field(
                rng, (U.ravel(), V.ravel(), W.ravel()), 5 * g
            )
        val = np.where(np.float32(gas_level) > V, np.float32(-990), content)
        val = np.where(q > wall, np.float32(rng.uniform(60, 90)), val)
        self.paint(sl, q < 1, val, where=self.cav3)

    def gallbladder(self):
        rng, g = self.rng, self.g
        if rng.random() >= self.p.gallbladder_probability:
            return
        c = (
            self.cu - rng.uniform(0.08, 0.2) * self.A,
            self.cv - rng.uniform(0.3, 0.45) * self.Ba,
            self.w_bot + rng.uniform(0.2, 0.4) * self.Lz,
        )
        box = self.ellipsoid(
            c,
            (rng.uniform(11, 16) * g, rng.uniform(14, 20) * g, rng.uniform(25, 40) * g),
            angle=rng.uniform(-0.6, 0.2),
            deform=0.08,
        )
        if box:
            sl, q, *_ = box
            val = np.where(q > 0.85, np.float32(rng.uniform(40, 70)), np.float32(rng.uniform(0, 25)))
            self.paint(sl, q < 1, val, where=self.cav3)

    def pancreas(self):
        """Soft-tissue band in front of the aorta (a liver-like HU confounder outside the liver)."""
        rng, g = self.rng, self.g
        c = (
            self.spine_cu + rng.uniform(0.05, 0.25) * self.A,
            self.ao[1] - self.r_ao - rng.uniform(12, 20) * g,
            self.w_bot + rng.uniform(0.25, 0.45) * self.Lz,
        )
        box = self.ellipsoid(
            c,
            (rng.uniform(50, 65) * g, rng.uniform(10, 14) * g, rng.uniform(15, 22) * g),
            angle=-rng.uniform(0.1, 0.45),
            deform=0.15,
            deform_scale=15,
        )
        if box:
            sl, q, *_ = box
            self.paint(sl, q < 1, np.float32(self.liver_hu - rng.uniform(0, 25)), where=self.cav3)

    def retroperitoneum(self):
        """Fat and diaphragmatic crura around the aorta, in front of the spine: keeps the liver
        from wrapping round the aorta and vertebra (it may still hug the IVC)."""
        rng, g = self.rng, self.g
        # crura: a muscular collar round the aorta in the upper abdomen (below the dome)
        box = self.crop(
            (self.ao[0] - 22 * g, self.ao[1] - 22 * g, self.w_bot + 0.35 * self.Lz),
            (self.ao[0] + 22 * g, self.ao[1] + 22 * g, self.zext),
        )
        if box:
            sl, U, V, W = box
            r = np.sqrt((U - np.float32(self.ao[0])) ** 2 + (V - np.float32(self.ao[1])) ** 2)
            ring = (r > self.r_ao) & (r < self.r_ao + rng.uniform(4, 7) * g) & (-np.inf < W)
            self.paint(sl, ring & ~self.dome_above[sl], np.float32(self.musc_hu))
        c = (self.spine_cu + rng.uniform(6, 12) * g, self.v_vb - 0.3 * self.vb_b, self.zext / 2)
        box = self.ellipsoid(c, (rng.uniform(34, 40) * g, self.vb_b + 28 * g, 10 * self.zext))
        if box:
            sl, q, *_ = box
            self.paint(sl, q < 1, np.float32(self.fat_hu + rng.uniform(0, 20)), where=self.cav3)

    def liver_shape(self):
        rng, g = self.rng, self.g
        A, Ba, Bp, Lz, wt = self.A, self.Ba, self.Bp, self.Lz, self.w_top
        B = 0.5 * (Ba + Bp)

        def jit(x, r=0.1):
            return x * (1 + rng.uniform(-r, r))

        comps = [  # (u, v, w), (a, b, c): right lobe, its inferior tip, medial segment, left lobe, caudate
            (
                (self.cu - jit(0.48 * A), self.cv + jit(0.02 * B, 1), wt - jit(0.40 * Lz)),
                (jit(0.56 * A), jit(0.92 * B), jit(0.52 * Lz)),
            ),
            (
                (self.cu - jit(0.62 * A), self.cv + jit(0.12 * B), wt - jit(0.74 * Lz)),
                (jit(0.33 * A), jit(0.50 * B), jit(0.27 * Lz)),
            ),
            (
                (self.cu - jit(0.08 * A), self.cv - jit(0.38 * B), wt - jit(0.42 * Lz)),
                (jit(0.30 * A), jit(0.42 * B), jit(0.32 * Lz)),
            ),
            (
                (self.cu + jit(0.18 * A, 0.4), self.cv - jit(0.50 * B), wt - jit(0.30 * Lz)),
                (jit(0.46 * A, 0.25), jit(0.32 * B), jit(0.22 * Lz)),
            ),
            (
                (self.cu - jit(0.06 * A), self.cv + jit(0.22 * B), wt - jit(0.35 * Lz)),
                (jit(0.16 * A), jit(0.22 * B), jit(0.22 * Lz)),
            ),
        ]
        lo = np.min([np.array(c) - np.array(a) for c, a in comps], axis=0) - 10 * g
        hi = np.max([np.array(c) + np.array(a) for c, a in comps], axis=0) + 10 * g
        box = self.crop(lo, hi)
        sl, U, V, W = box
        q = None
        for c, a in comps:
            qi = (
                ((U - np.float32(c[0])) / np.float32(a[0])) ** 2
                + ((V - np.float32(c[1])) / np.float32(a[1])) ** 2
                + ((W - np.float32(c[2])) / np.float32(a[2])) ** 2
            )
            q = qi if q is None else np.minimum(q, qi)
        coords = (U.ravel(), V.ravel(), W.ravel())
        f = 0.7 * _smooth_field(rng, coords, 45 * g) + 0.3 * _smooth_field(rng, coords, 20 * g)
        q = q * (1 + np.float32(rng.uniform(0.15, 0.28)) * f)
        k0, k1 = sl[2].start, sl[2].stop
        zok = np.zeros(k1 - k0, dtype=bool)  # hard guarantee of liver-free end slices
        ks = np.arange(k0, k1)
        zok[(ks >= self.m_lo) & (ks <= self.nz - 1 - self.m_hi)] = True
        below_dome = (self.dome[sl[0], sl[1]][:, :, None] - np.float32(5 * g)) > W
        m = (q < 1) & self.cav3[sl] & ~self.occ[sl] & below_dome & zok[None, None, :]
        m = _largest_component(m)
        # parenchyma with a faint low-frequency mottle
        val = np.float32(self.liver_hu) + np.float32(4.0) * _smooth_field(rng, coords, 12 * g)
        np.copyto(self.img[sl], val, where=m)
        self.liver[sl] = m
        self.occ[sl] |= m
        self.liver_box = sl

    def liver_vessels(self):
        rng, g = self.rng, self.g
        vhu = self.liver_hu + rng.uniform(*self.p.vessel_contrast_hu)
        segs = []
        sl = self.liver_box
        lm = self.liver

        def grow(start, direction, length, radius, depth):
            stack = [(np.asarray(start, float), _unit(np.asarray(direction, float)), length, radius, depth)]
            while stack:
                s0, d, ln, r, dep = stack.pop()
                end = s0 + d * ln
                tries = 0
                while not self.inside(lm, end) and tries < 2:
                    ln *= 0.55
                    end = s0 + d * ln
                    tries += 1
                if not self.inside(lm, end):
                    continue
                segs.append((s0, end, r, r * 0.85))
                if dep == 0 or r * 0.72 < 1.1 * g:
                    continue
                perp = _unit(np.cross(d, rng.normal(size=3)))
                for sgn in (-1.0, 1.0):
                    ang = rng.uniform(0.35, 0.75)
                    nd = _unit(math.cos(ang) * d + sgn * math.sin(ang) * perp + rng.normal(0, 0.1, 3))
                    stack.append((end, nd, ln * rng.uniform(0.65, 0.85), r * rng.uniform(0.65, 0.78), dep - 1))

        # portal vein: enters at the hilum (inferior-medial), branches right-lateral and left-anterior
        hilum = np.array([self.cu - 0.18 * self.A, self.cv + 0.05 * self.Bp, self.w_top - 0.58 * self.Lz])
        if not self.inside(lm, hilum):
            idx = np.argwhere(lm[sl])
            if len(idx):
                pick = idx[rng.integers(len(idx))]
                hilum = np.array(
                    [self.u[pick[0] + sl[0].start], self.v[pick[1] + sl[1].start], self.w[pick[2] + sl[2].start]],
                    dtype=float,
                )
        rp = rng.uniform(6, 8) * g
        grow(hilum, (-1.0, rng.normal(0, 0.3), rng.uniform(0.0, 0.5)), 32 * g, rp, 4)
        grow(hilum, (0.8, -0.8, rng.uniform(0.1, 0.5)), 30 * g, rp * 0.85, 3)
        # hepatic veins: converge on the IVC below the dome, fan out anteriorly / laterally / inferiorly
        top = np.array([self.ivc[0], self.ivc[1] - 6 * g, self.w_top - 0.15 * self.Lz])
        for d in ((-1.0, -0.2, -0.45), (-0.2, -1.0, -0.4), (0.7, -0.9, -0.3)):
            grow(top + np.array(d) * 8 * g, d, 35 * g, rng.uniform(4.5, 6.0) * g, 3)
        for p0, p1, r0, r1 in segs:
            cap = self.capsule(p0, p1, r0, r1)
            if cap is None:
                continue
            csl, m = cap
            m &= lm[csl]
            np.copyto(self.img[csl], np.float32(vhu + rng.uniform(-8, 8)), where=m)
        # extrahepatic portal trunk running up into the hilum
        trunk0 = hilum + np.array([14 * g, 18 * g, -45 * g])
        cap = self.capsule(trunk0, hilum, rp, rp)
        if cap:
            csl, m = cap
            self.paint(csl, m, np.float32(vhu), where=self.cav3)
        self.vessel_segments = len(segs)

    def tumors(self):
        rng, g, p = self.rng, self.g, self.p
        if p.max_tumors == 0 or rng.random() < p.tumor_free_fraction:
            self.n_tumors = 0
            return
        n = int(min(p.max_tumors, rng.geometric(0.33)))
        self.n_tumors = n
        sl = self.liver_box
        lm = self.liver[sl]
        # liver depth map (mm) on a 2x in-plane subsampled grid, to place tumour centres inside
        f = 2 if self.n >= 128 else 1
        sub = lm[::f, ::f, :]
        depth = ndimage.distance_transform_edt(sub, sampling=(f * self.s, f * self.s, self.sz))
        ks = np.nonzero(lm.any(axis=(0, 1)))[0]
        if len(ks) == 0:
            self.n_tumors = 0
            return
        k_lo, k_hi = ks[0], ks[-1]
        span = k_hi - k_lo + 1
        band = max(1, int(round(p.tumor_band * span)))
        b0 = k_lo + int(rng.integers(0, max(1, span - band + 1)))
        lo_mm, hi_mm = p.tumor_diameter_range_mm
        for t in range(n):
            if t == 0:
                med = p.tumor_diameter_mm
            elif rng.random() < p.small_tumor_fraction:
                med = p.small_tumor_diameter_mm
            else:
                med = p.satellite_diameter_mm
            diam = float(np.clip(med * math.exp(rng.normal(0, p.tumor_diameter_sigma)), lo_mm, hi_mm)) * g
            R = diam / 2
            dband = depth[:, :, b0 : b0 + band]
            dmax = float(dband.max())
            if dmax <= 0:
                break
            need = min(0.7 * R, 0.85 * dmax)
            cand = np.argwhere(dband >= need)
            pick = cand[rng.integers(len(cand))]
            i, j, k = pick[0] * f + sl[0].start, pick[1] * f + sl[1].start, pick[2] + b0 + sl[2].start
            R = min(R, 1.2 * float(depth[pick[0], pick[1], pick[2] + b0]) + 2 * g)
            self._one_tumor(np.array([self.u[i], self.v[j], self.w[k]], dtype=float), R)

    def _one_tumor(self, c, R):
        rng, g, p = self.rng, self.g, self.p
        spheres = [(c, R)]
        for _ in range(int(rng.integers(0, 4))):
            d = _unit(rng.normal(size=3))
            spheres.append((c + d * R * rng.uniform(0.45, 0.85), R * rng.uniform(0.35, 0.7)))
        amp = rng.uniform(0.04, 0.18)
        ext = 1.7 * R * (1 + 2 * amp) + 2 * g
        box = self.crop(c - ext, c + ext)
        if box is None:
            return
        sl, U, V, W = box
        q = None
        for cc, r in spheres:
            qi = np.sqrt(
                (U - np.float32(cc[0])) ** 2 + (V - np.float32(cc[1])) ** 2 + (W - np.float32(cc[2])) ** 2
            ) / np.float32(r)
            q = qi if q is None else np.minimum(q, qi)
        coords = (U.ravel(), V.ravel(), W.ravel())
        q = q * (1 + np.float32(amp) * _smooth_field(rng, coords, max(0.6 * R, 3 * g)))
        lm = self.liver[sl]
        inside = (q < 1) & lm
        if not inside.any():
            return
        if rng.random() < p.low_contrast_fraction:
            delta = rng.uniform(*p.low_contrast_hu)
        else:
            delta = rng.uniform(*p.tumor_contrast_hu)
        T = np.float32(self.liver_hu - delta) + np.float32(0.2 * delta) * _smooth_field(
            rng, coords, max(0.4 * R, 3 * g)
        )
        if 12 * g < R and rng.random() < 0.4:  # necrotic core
            T = T - np.float32(rng.uniform(15, 40)) * np.clip((0.6 - q) / 0.2, 0, 1)
        if rng.random() < 0.2:  # enhancing rim
            T = T + np.float32(rng.uniform(15, 35) + delta * 0.5) * np.clip(1 - np.abs(q - 0.88) / 0.1, 0, 1)
        # soft edge: half contrast at the label boundary, fading out 15 % beyond it (inside the liver)
        wgt = np.clip((1.15 - q) / 0.3, 0, 1) * lm
        cur = self.img[sl]
        cur += wgt * (T - cur)
        self.tumor[sl] |= inside

    def bowel(self):
        rng, g = self.rng, self.g
        free = self.cav3 & ~self.occ
        n_loops = int(rng.integers(22, 36))
        w_hi = self.w_bot + 0.55 * self.Lz
        for t in range(n_loops + 2):
            colon = t < 2
            if colon:  # hepatic flexure near the liver tip, then the transverse colon
                c = np.array(
                    [
                        self.cu - 0.55 * self.A if t == 0 else self.cu + rng.uniform(-0.2, 0.3) * self.A,
                        self.cv - (0.1 if t == 0 else 0.6) * self.Ba,
                        self.w_bot + rng.uniform(-0.05, 0.15) * self.Lz,
                    ]
                )
                r = rng.uniform(16, 24) * g
                ln = rng.uniform(40, 80) * g
                d = _unit(
                    np.array([0.3, -1, 0.4]) if t == 0 else np.array([1.0, rng.normal(0, 0.2), rng.normal(0, 0.2)])
                )
            else:
                c = np.array(
                    [
                        self.cu + rng.uniform(-0.7, 0.75) * self.A,
                        self.cv + rng.uniform(-0.85 * self.Ba, 0.35 * self.Bp),
                        rng.uniform(0, w_hi),
                    ]
                )
                r = rng.uniform(8, 17) * g
                ln = rng.uniform(20, 60) * g
                d = _unit(np.array([rng.normal(), rng.normal(), 0.5 * rng.normal()]))
            cap_o = self.capsule(c - d * ln / 2, c + d * ln / 2, r, r, shell=3 * g)
            if cap_o is None:
                continue
            csl, outer, inner = cap_o
            outer &= free[csl]
            if not outer.any():
                continue
            kind = rng.random()
            if colon or kind < 0.3:  # stool: mottled soft tissue with gas bubbles
                box = csl
                fld = _smooth_field(rng, [self.u[box[0]], self.v[box[1]], self.w[box[2]]], 4 * g)
                lumen = np.where(fld > 0.9, np.float32(-950), np.float32(rng.uniform(-20, 40)) + 20 * fld)
            elif kind < 0.55:
                lumen = np.float32(rng.uniform(-1000, -900))
            else:
                lumen = np.float32(rng.uniform(0, 35))
            val = np.where(inner, lumen, np.float32(rng.uniform(55, 85)))
            self.paint(csl, outer, val)
            free[csl] &= ~outer

    def ribs(self):
        rng, g = self.rng, self.g
        spacing = rng.uniform(26, 32) * g
        drop = rng.uniform(55, 85) * g
        first = self.w_bot - rng.uniform(10, 30) * g
        tf = self.t_fat + 0.5 * self.t_musc
        ribs = []
        w0 = first
        idx = 0
        while w0 - 0 < self.zext + drop and w0 - drop < self.zext + 2 * spacing:
            psi1 = np.deg2rad(75 if idx == 0 else 95 if idx == 1 else rng.uniform(125, 140))
            ribs.append((w0, psi1))
            w0 += spacing
            idx += 1
        allowed = self.body3 & ~self.liver
        for side in (-1, 1):
            for w0, psi1 in ribs:
                psi0 = np.deg2rad(rng.uniform(22, 30))
                psis = np.linspace(psi0, psi1, 7)
                r = rng.uniform(4.0, 5.5) * g
                pts = []
                for k, ps in enumerate(psis):
                    cps = math.cos(ps)
                    bb = self.b_post if cps > 0 else self.b_ant
                    frac = (ps - psi0) / (psi1 - psi0)
                    ww = w0 - drop * frac
                    sc = 1.0
                    pts.append(
                        (
                            self.cu + side * self.a_body * (1 - tf) * sc * math.sin(ps),
                            self.cv + bb * (1 - tf - (self.t_fat_ant if cps < 0 else 0) * -cps) * cps,
                            ww,
                        )
                    )
                for a, b in zip(pts[:-1], pts[1:]):
                    if max(a[2], b[2]) < -r or min(a[2], b[2]) > self.zext + r:
                        continue
                    cap = self.capsule(a, b, r, r, shell=1.6 * g)
                    if cap is None:
                        continue
                    csl, m, marrow = cap
                    val = np.where(marrow, np.float32(rng.uniform(180, 280)), np.float32(rng.uniform(450, 700)))
                    self.paint(csl, m, val, claim=False, where=allowed)

    def acquire(self) -> np.ndarray:
        """Partial-volume blur and correlated scanner noise on the image only; HU int16."""
        rng, p = self.rng, self.p
        psf = rng.uniform(*p.psf_sigma_mm) * self.g
        sig = (psf / self.s, psf / self.s, p.slice_profile)
        sd = float(rng.uniform(*p.noise_sd_hu))
        img = self.img
        if sd > 0:
            # white noise blurred together with the image: blur(img + k*n) = blur(img) + k*blur(n),
            # i.e. noise correlated by the same PSF (CT noise is not white); k restores the target sd
            gain = 1.0
            for sgm in sig:
                r = int(3.0 * sgm + 0.5)
                x = np.arange(-r, r + 1, dtype=np.float64)
                wk = np.exp(-0.5 * (x / max(sgm, 1e-6)) ** 2)
                wk /= wk.sum()
                gain *= float(np.sum(wk**2))
            noise = rng.standard_normal(self.shape, dtype=np.float32)
            noise *= np.float32(sd / math.sqrt(gain))
            img += noise
        img = ndimage.gaussian_filter(img, sigma=sig, truncate=3.0)
        np.clip(img, HU_MIN, HU_MAX, out=img)
        return np.rint(img).astype(np.int16)

    def affine(self) -> np.ndarray:
        rng = self.rng
        aff = np.diag([-self.s, -self.s, self.sz_true, 1.0])
        # origin = world position of voxel (0, 0, 0) (RAS mm): the FOV centred near the isocentre
        aff[0, 3] = (self.n - 1) / 2.0 * self.s + rng.uniform(-25, 25)
        aff[1, 3] = (self.n - 1) / 2.0 * self.s + rng.uniform(-10, 60)
        aff[2, 3] = -rng.uniform(300, 700)
        return aff


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------


def _check_ids(index: int, seed: int) -> None:
    if int(index) != index or index < 0:
        raise LitsError(f"synthetic data: case index must be a non-negative integer, got {index!r}")
    if int(seed) != seed or seed < 0:
        raise LitsError(f"synthetic data: seed must be a non-negative integer, got {seed!r}; fix data.synthetic.seed")


def generate_case(
    index: int, seed: int = 0, params: SyntheticParams = SyntheticParams()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (volume int16 HU, segmentation uint8, affine float64 4x4); arrays in NIfTI voxel
    order (X, Y, Z), affine ``diag(-s, -s, sz)`` + origin (axis codes L, P, S).

    Depends only on (seed, index): the same inputs give byte-identical arrays."""
    _check_ids(index, seed)
    rng = np.random.default_rng([int(seed), int(index)])
    return _Case(rng, params).build()


def _nifti(data: np.ndarray, affine: np.ndarray, descrip: str):
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    hdr.set_xyzt_units(xyz="mm", t="sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr["descrip"] = descrip.encode()[:79]
    return img


def _save_nifti(img, path: Path) -> None:
    import nibabel as nib

    old = nib.openers.Opener.default_compresslevel
    nib.openers.Opener.default_compresslevel = _COMPRESSLEVEL
    try:
        nib.save(img, str(path))
    finally:
        nib.openers.Opener.default_compresslevel = old


MANIFEST = "synthetic.json"  # the generator settings a data set was made with


def manifest(num_cases: int, seed: int, params: SyntheticParams) -> dict:
    return {"num_cases": int(num_cases), "seed": int(seed), "params": json.loads(json.dumps(asdict(params)))}


def generate_dataset(
    root: str | Path, num_cases: int, seed: int = 0, params: SyntheticParams = SyntheticParams(), progress: bool = True
) -> Path:
    """Writes volume-N.nii.gz / segmentation-N.nii.gz (N = 0..num_cases-1) into ``root``.

    Atomic: the cases are generated into a temporary sibling directory that is renamed to
    ``root`` only when every case is written, so an interrupted run leaves no partial data set
    (a hard kill can leave a hidden ``.<root>.tmp-*`` sibling, never a half-filled ``root``).
    Raises LitsError if ``root`` already exists and is non-empty. Returns ``root``."""
    from tqdm.auto import tqdm

    root = Path(root).expanduser()
    _check_ids(0, seed)
    if int(num_cases) != num_cases or num_cases < 1:
        raise LitsError(
            f"synthetic data: num_cases must be a positive integer, got {num_cases!r}; fix data.synthetic.num_cases"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise LitsError(
            f"{root}: synthetic data target already exists and is not an empty folder; "
            f"delete it or choose another folder (data.root / --out)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it private; the data set is not
        for i in tqdm(range(int(num_cases)), desc=f"synthetic LiTS -> {root.name}", unit="case", disable=not progress):
            vol, seg, aff = generate_case(i, seed, params)
            vname, sname = case_filenames(i)
            _save_nifti(_nifti(vol, aff, f"lits synthetic seed={seed} case={i}"), tmp / vname)
            _save_nifti(_nifti(seg, aff, f"lits synthetic seed={seed} case={i} labels"), tmp / sname)
        (tmp / MANIFEST).write_text(json.dumps(manifest(num_cases, seed, params), indent=1))
        try:
            os.replace(tmp, root)  # replaces an empty directory atomically; fails if non-empty
        except OSError as exc:
            raise LitsError(
                f"{root}: could not move the generated data set into place ({exc}); "
                f"another process may have written it meanwhile: delete it and rerun"
            ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _pick_slices(seg: np.ndarray, num_slices: int) -> list[int]:
    """Tumour slices (the largest tumour cross-section first, the rest spread over the tumour
    z-range) plus tumour-free liver slices (largest liver area first), at least 2 slices apart."""
    liver_area = (seg >= 1).sum(axis=(0, 1))
    tumor_area = (seg == 2).sum(axis=(0, 1))
    liver_k = np.nonzero(liver_area)[0]
    tumor_k = np.nonzero(tumor_area)[0]
    free_k = np.setdiff1d(liver_k, tumor_k)
    nz = seg.shape[2]
    if len(liver_k) == 0:
        return sorted(set(np.linspace(0, nz - 1, min(num_slices, nz)).round().astype(int).tolist()))
    n_free = min(len(free_k), max(1, num_slices // 3) if len(tumor_k) else num_slices)
    n_tum = min(num_slices - n_free, len(tumor_k))
    picks: list[int] = []

    def take(cands, n, gap=2):
        got = 0
        for k in cands:
            if got >= n:
                break
            if all(abs(int(k) - q) >= gap for q in picks):
                picks.append(int(k))
                got += 1
        for k in cands:  # relax the spacing if the range is short
            if got >= n:
                break
            if int(k) not in picks:
                picks.append(int(k))
                got += 1

    if n_tum:
        spread = tumor_k[np.linspace(0, len(tumor_k) - 1, n_tum + 2).round().astype(int)[1:-1]]
        take([tumor_k[np.argmax(tumor_area[tumor_k])], *spread, *tumor_k], n_tum)
    if n_free:
        take(free_k[np.argsort(-liver_area[free_k], kind="stable")], n_free)
    return sorted(picks)


def save_montage(
    volume: np.ndarray,
    segmentation: np.ndarray,
    path: str | Path,
    num_slices: int = 6,
    affine: np.ndarray | None = None,
    window: tuple[float, float] = (-160.0, 240.0),
) -> Path:
    """PNG montage of a few axial slices (tumour slices and a tumour-free liver slice) in a
    soft-tissue window (W400/L40) with liver (green) and tumour (red) outlines and a tumour
    overlay, in radiological orientation (patient right on image left, anterior up).

    Arrays are assumed in this generator's voxel orientation (L, P, S, as in raw LiTS files)
    unless ``affine`` is given, in which case they are reoriented from it first.
    Written atomically (temp file + os.replace). Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    vol = np.asarray(volume)
    seg = np.asarray(segmentation)
    if vol.shape != seg.shape or vol.ndim != 3:
        raise LitsError(
            f"{path}: montage needs a 3-D volume and segmentation of equal shape, got {vol.shape} and {seg.shape}"
        )
    if affine is not None:
        import nibabel as nib
        from nibabel import orientations as nio

        tr = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(("L", "P", "S")))
        vol = nio.apply_orientation(vol, tr)
        seg = nio.apply_orientation(seg, tr)
        del nib
    ks = _pick_slices(seg, max(1, int(num_slices)))
    ncol = min(3, len(ks))
    nrow = int(math.ceil(len(ks) / ncol))
    fig = Figure(figsize=(4.2 * ncol, 4.4 * nrow), dpi=100, facecolor="black")
    FigureCanvasAgg(fig)
    lo, hi = window
    for n, k in enumerate(ks):
        ax = fig.add_subplot(nrow, ncol, n + 1)
        sl = vol[:, :, k].T  # rows = Y (anterior at top), cols = X (patient right at left)
        lab = seg[:, :, k].T
        ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        tum = lab == 2
        if tum.any():
            overlay = np.zeros(tum.shape + (4,), dtype=np.float32)
            overlay[tum] = (1.0, 0.1, 0.1, 0.28)
            ax.imshow(overlay, interpolation="nearest")
            ax.contour(tum.astype(np.float32), levels=[0.5], colors=["red"], linewidths=0.9)
        if (lab >= 1).any():
            ax.contour((lab >= 1).astype(np.float32), levels=[0.5], colors=["lime"], linewidths=0.9)
        ax.set_title(
            f"slice {k}: liver {int((lab >= 1).sum())} px, tumour {int(tum.sum())} px", color="white", fontsize=9
        )
        ax.text(0.01, 0.5, "R", color="yellow", transform=ax.transAxes, fontsize=9, va="center")
        ax.text(0.97, 0.5, "L", color="yellow", transform=ax.transAxes, fontsize=9, va="center")
        ax.text(0.5, 0.98, "A", color="yellow", transform=ax.transAxes, fontsize=9, ha="center", va="top")
        ax.set_axis_off()
    fig.suptitle(f"window [{lo:g}, {hi:g}] HU  -  green: liver, red: tumour", color="white", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, ".tmp") as tmp:
        fig.savefig(tmp, format="png", facecolor=fig.get_facecolor())
    return path
