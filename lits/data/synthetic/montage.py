"""PNG pictures of cases: a montage of a case's tumour and tumour-free liver slices, and chosen slices side by side."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lits.core.errors import LitsError
from lits.core.files import atomic_path


def pick_slices(seg: np.ndarray, num_slices: int) -> list[int]:
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
    ks = pick_slices(seg, max(1, int(num_slices)))
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


def save_panels(
    panels: list[tuple[np.ndarray, np.ndarray, str]],
    path: str | Path,
    window: tuple[float, float] = (-160.0, 240.0),
    title: str = "",
) -> Path:
    """PNG of axial slices side by side, each twice: the CT alone on top (as a reader would see it), below with the
    liver (green) and tumour (red) outlines. A panel is (HU slice, label slice, caption), both 2-D in this
    generator's voxel orientation (X, Y: patient right on image left, anterior up), cropped as the caller wants.
    Written atomically. Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise LitsError(f"{path}: no slices to draw")
    fig = Figure(figsize=(3.4 * len(panels), 7.2), dpi=110, facecolor="black")
    FigureCanvasAgg(fig)
    for n, (image, labels, caption) in enumerate(panels):
        for row in (0, 1):
            ax = fig.add_subplot(2, len(panels), row * len(panels) + n + 1)
            ax.imshow(np.asarray(image).T, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
            lab = np.asarray(labels).T
            if row == 1:
                if (lab >= 1).any():
                    ax.contour((lab >= 1).astype(np.float32), levels=[0.5], colors=["lime"], linewidths=0.8)
                if (lab == 2).any():
                    ax.contour((lab == 2).astype(np.float32), levels=[0.5], colors=["red"], linewidths=0.8)
            else:
                ax.set_title(caption, color="white", fontsize=8)
            ax.set_axis_off()
    fig.suptitle(title or f"window [{window[0]:g}, {window[1]:g}] HU", color="white", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, ".tmp") as tmp:
        fig.savefig(tmp, format="png", facecolor=fig.get_facecolor())
    return path
