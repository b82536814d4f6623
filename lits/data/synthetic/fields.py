"""Smooth random fields and small geometry helpers the anatomy is drawn with."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def smooth_field(rng: np.random.Generator, coords, scale: float) -> np.ndarray:
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


def rotating_field(rng: np.random.Generator, u, v, w, scale: float) -> np.ndarray:
    """Cheap smooth 3-D field for whole volumes: two 2-D fields blended as cos/sin of a phase
    that advances one radian per ``scale`` mm along w (unit variance everywhere)."""
    f1 = smooth_field(rng, (u, v), scale)
    f2 = smooth_field(rng, (u, v), scale)
    phase = np.asarray(w, dtype=np.float32) / np.float32(scale) + np.float32(rng.uniform(0, 2 * np.pi))
    out = f1[:, :, None] * np.cos(phase)[None, None, :]
    out += f2[:, :, None] * np.sin(phase)[None, None, :]
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask`` (``mask`` itself if it has at most one)."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return lab == int(np.argmax(counts))


def unit(v: np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1 (a zero vector stays zero)."""
    return v / (np.linalg.norm(v) + 1e-12)


def segment_mask2d(U, V, p0, p1, r):
    """In-plane mask of the points within ``r`` mm of the segment p0 -> p1 (only u, v of each used);
    ``U`` and ``V`` are broadcastable mm coordinate arrays."""
    d = np.array([p1[0] - p0[0], p1[1] - p0[1]], dtype=np.float32)
    l2 = float(d @ d) + 1e-6
    du, dv = U - np.float32(p0[0]), V - np.float32(p0[1])
    t = np.clip((du * d[0] + dv * d[1]) / np.float32(l2), 0, 1)
    return (du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2 <= np.float32(r * r)


def capsule_distance2(U, V, W, p0, p1):
    """Squared distance (mm^2) of every grid point to the segment p0 -> p1, and the position t in [0, 1] of its
    nearest point on it; ``U``, ``V``, ``W`` are broadcastable mm coordinate arrays, p0 and p1 float32 triples."""
    d = p1 - p0
    l2 = float(d @ d) + 1e-6
    du, dv, dw = U - p0[0], V - p0[1], W - p0[2]
    t = np.clip((du * d[0] + dv * d[1] + dw * d[2]) / np.float32(l2), 0.0, 1.0)
    return (du - t * d[0]) ** 2 + (dv - t * d[1]) ** 2 + (dw - t * d[2]) ** 2, t
