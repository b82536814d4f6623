"""The scanner: partial-volume blur and correlated noise on the painted image, and the affine."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from lits.core.config.synthetic import SyntheticParams
from lits.data.synthetic.params import HU_MAX, HU_MIN


def acquire(
    rng: np.random.Generator, img: np.ndarray, p: SyntheticParams, anatomy_scale: float, spacing_xy: float
) -> np.ndarray:
    """Partial-volume blur and correlated scanner noise on the image only; HU int16.

    ``img`` is the painted float32 HU volume; the noise is added to it in place. ``anatomy_scale``
    scales the in-plane PSF like the anatomy, ``spacing_xy`` (mm) converts it to voxels."""
    psf = rng.uniform(*p.psf_sigma_mm) * anatomy_scale
    sig = (psf / spacing_xy, psf / spacing_xy, p.slice_profile)
    sd = float(rng.uniform(*p.noise_sd_hu))
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
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        noise *= np.float32(sd / math.sqrt(gain))
        img += noise
    img = ndimage.gaussian_filter(img, sigma=sig, truncate=3.0)
    np.clip(img, HU_MIN, HU_MAX, out=img)
    return np.rint(img).astype(np.int16)


def scanner_affine(rng: np.random.Generator, size: int, spacing_xy: float, spacing_z: float) -> np.ndarray:
    """``diag(-s, -s, sz)`` (voxel axes L, P, S) with a random origin near the isocentre."""
    aff = np.diag([-spacing_xy, -spacing_xy, spacing_z, 1.0])
    # origin = world position of voxel (0, 0, 0) (RAS mm): the FOV centred near the isocentre
    aff[0, 3] = (size - 1) / 2.0 * spacing_xy + rng.uniform(-25, 25)
    aff[1, 3] = (size - 1) / 2.0 * spacing_xy + rng.uniform(-10, 60)
    aff[2, 3] = -rng.uniform(300, 700)
    return aff
