"""Calibrated probabilities: one temperature per head fitted on validation voxels (temperature scaling, Guo et al.,
"On Calibration of Modern Neural Networks", ICML 2017), its reliability diagram and expected calibration error.

The network's probability p = sigmoid(z / T) already carries the training temperature T; calibration finds the
factor c minimising the binary cross-entropy of sigmoid(logit(p) / c) against the reference, so that the
calibrated probability sigmoid(z / (T c)) of every threshold means what it says. The voxels are those of the region
the post-processing acts on: the bounding box of reference and predicted liver (plus a margin), sampled evenly up to
`max_voxels` per case, so that the easy background far from the liver does not make every model look calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from lits.evaluate.pictures import png_bytes

EPS = 1e-6
BINS = 15  # reliability bins of equal width in probability


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def calibrate(p: np.ndarray, factor: float) -> np.ndarray:
    """sigmoid(logit(p) / factor): the probability at temperature T * factor from one at temperature T."""
    return (1.0 / (1.0 + np.exp(-logit(p) / factor))).astype(np.float32)


def region_sample(probs: np.ndarray, label: np.ndarray, max_voxels: int, seed: int = 0, margin: int = 8):
    """(liver p, liver y, tumour p, tumour y) from the box of reference and predicted liver grown by `margin`
    voxels in-plane, an even random sample of at most `max_voxels` of it. probs: (2, Z, Y, X); label: (Z, Y, X)."""
    region = (np.asarray(label) >= 1) | (np.asarray(probs[0]) > 0.5)
    if not region.any():
        return (np.empty(0, np.float32),) * 4
    zs, ys, xs = (np.flatnonzero(region.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    box = (
        slice(zs[0], zs[-1] + 1),
        slice(max(0, ys[0] - margin), ys[-1] + 1 + margin),
        slice(max(0, xs[0] - margin), xs[-1] + 1 + margin),
    )
    lab = np.asarray(label[box]).ravel()
    liver, tumor = (np.asarray(probs[c][box], np.float32).ravel() for c in (0, 1))
    if lab.size > max_voxels:
        pick = np.sort(np.random.default_rng(seed).choice(lab.size, max_voxels, replace=False))
        lab, liver, tumor = lab[pick], liver[pick], tumor[pick]
    return liver, (lab >= 1).astype(np.float32), tumor, (lab == 2).astype(np.float32)


def fit_temperature(p: np.ndarray, y: np.ndarray) -> float:
    """The factor c in [0.05, 20] minimising the mean binary cross-entropy of sigmoid(logit(p) / c) against y."""
    z, y = logit(p), np.asarray(y, np.float64)
    if z.size == 0 or y.min() == y.max():  # nothing to learn from: leave the head as it is
        return 1.0

    def nll(log_c: float) -> float:
        s = z / np.exp(log_c)
        return float(np.mean(np.logaddexp(0.0, s) - y * s))  # BCE with logits, stable

    best = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(best.x))


@dataclass
class Reliability:
    """Per probability bin: mean predicted probability, observed frequency and voxel count; and the ECE."""

    confidence: np.ndarray
    frequency: np.ndarray
    count: np.ndarray
    ece: float


def reliability(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> Reliability:
    """Expected calibration error: sum over equal-width bins of (share of voxels) x |frequency - mean probability|."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=p, minlength=bins) / count
        frequency = np.bincount(which, weights=y, minlength=bins) / count
    used = count > 0
    ece = float(np.sum(count[used] / max(1, p.size) * np.abs(frequency[used] - confidence[used])))
    return Reliability(confidence, frequency, count, ece)


def _compact(n: float) -> str:
    """A voxel count in a few characters: 950, 12k, 3.4M."""
    n = float(n)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= limit:
            return f"{n / limit:.2g}{suffix}"
    return f"{n:.0f}"


def reliability_png(curves: dict[str, Reliability], title: str) -> bytes:
    """PNG: reliability diagram (observed frequency against predicted probability) of each named curve, with the
    diagonal of perfect calibration, the ECE in the legend and each bin's voxel count at its point (the ECE weighs
    bins by those counts: a far-off point with few voxels barely moves it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 4.6), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, curve in curves.items():
        used = curve.count > 0
        (line,) = ax.plot(
            curve.confidence[used],
            curve.frequency[used],
            marker="o",
            markersize=4,
            label=f"{name} (ECE {curve.ece:.3f}, voxel-weighted)",
        )
        for xi, yi, n in zip(curve.confidence[used], curve.frequency[used], curve.count[used]):
            ax.annotate(_compact(n), (xi, yi), fontsize=6, color=line.get_color(), xytext=(3, -8),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return png_bytes(fig)
