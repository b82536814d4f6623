"""Writing results people read and look at: tables, CSV/JSON/markdown/PNG (atomically), overlay pictures.

Pictures are drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so
they work on headless machines and in worker processes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from skimage.segmentation import find_boundaries

# outline colours (RGB 0..1)
LIVER_COLOR = np.array([0.2, 0.9, 0.2])
TUMOR_COLOR = np.array([1.0, 0.2, 0.2])


def overlay(image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(H, W) image in [0, 1] + label map {0,1,2} -> (H, W, 3) RGB with liver and tumour outlines."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)
    rgb[find_boundaries(label >= 1, mode="inner")] = LIVER_COLOR
    rgb[find_boundaries(label == 2, mode="inner")] = TUMOR_COLOR
    return rgb


def comparison_grid(images: list[np.ndarray], truths: list[np.ndarray], predictions: list[np.ndarray]) -> np.ndarray:
    """Rows of [CT | ground truth outlines | prediction outlines], (H_total, W_total, 3) float in [0, 1].

    Slices are shown in radiological orientation (canonical RAS arrays flipped so anterior is up and the
    patient's right is on the left of the picture).
    """
    rows = []
    for image, truth, pred in zip(images, truths, predictions):
        gray = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)
        panels = [gray, overlay(image, truth), overlay(image, pred)]
        # flip each panel, not the joined row: flipping the row would also reverse the panel order
        rows.append(np.concatenate([p[::-1, ::-1] for p in panels], axis=1))
    return np.concatenate(rows, axis=0)


# ------------------------------------------------------------------------------------ evaluation pictures


def error_slices(pred: np.ndarray, ref: np.ndarray, count: int) -> list[int]:
    """Up to `count` slice indices (Z, Y, X arrays), sorted by z, with the most wrong tumour voxels.

    Ties and cases without tumour error fall back to the liver error, then to the slices with most
    reference liver, so a montage always shows something.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    tumor_err = ((pred == 2) != (ref == 2)).sum(axis=(1, 2))
    liver_err = ((pred >= 1) != (ref >= 1)).sum(axis=(1, 2))
    liver_ref = (ref >= 1).sum(axis=(1, 2))
    # lexsort: last key is primary
    order = np.lexsort((liver_ref, liver_err, tumor_err))[::-1]
    return sorted(int(z) for z in order[: max(1, count)])


def _crop_box(masks: Sequence[np.ndarray], margin: int | None) -> tuple[slice, slice]:
    """In-plane box around the foreground of all masks plus `margin` pixels (whole slice for None / no foreground)."""
    full = (slice(None), slice(None))
    if margin is None:
        return full
    fg = np.any(np.stack([np.asarray(m) > 0 for m in masks]), axis=0)
    if not fg.any():
        return full
    ys, xs = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    h, w = fg.shape
    return (
        slice(max(0, ys[0] - margin), min(h, ys[-1] + 1 + margin)),
        slice(max(0, xs[0] - margin), min(w, xs[-1] + 1 + margin)),
    )


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def montage_png(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    slices: Sequence[int],
    title: str,
    crop_margin: int | None = 24,
) -> bytes:
    """PNG: one row per slice (index `slices[i]`) of [CT | reference outlines | prediction outlines], cropped
    around the liver. images in [0, 1], truths / preds label maps, all 2D (Y, X)."""
    from matplotlib.figure import Figure

    images = [np.asarray(i, dtype=np.float32) for i in images]
    box = _crop_box(list(truths) + list(preds), crop_margin)
    grid = comparison_grid([i[box] for i in images], [t[box] for t in truths], [p[box] for p in preds])
    height, width = grid.shape[:2]
    scale = max(1.0, 600 / width)  # small crops are upscaled so outlines stay visible
    fig = Figure(figsize=(width * scale / 100, height * scale / 100 + 0.6), dpi=100)
    ax = fig.add_axes((0.06, 0, 0.94, height * scale / (height * scale + 60)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_xticks([(k + 0.5) * width / 3 for k in range(3)], ["CT", "reference", "prediction"])
    ax.xaxis.tick_top()
    ax.set_yticks([(k + 0.5) * height / len(slices) for k in range(len(slices))], [f"z={z}" for z in slices])
    ax.tick_params(length=0, labelsize=8)
    fig.suptitle(f"{title}\nliver outline green, tumour red", fontsize=9)
    return _png(fig)


def dice_volume_png(rows: Sequence[Mapping], title: str) -> bytes:
    """PNG: per-case tumour Dice against reference tumour volume (ml, log scale); tumour-free cases apart."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=100)
    ax = fig.add_subplot()
    with_tumor = [r for r in rows if float(r["tumor_volume_ref_ml"]) > 0]
    free = [r for r in rows if float(r["tumor_volume_ref_ml"]) <= 0]
    if with_tumor:
        x = np.array([float(r["tumor_volume_ref_ml"]) for r in with_tumor])
        y = np.array([float(r["tumor_dice"]) for r in with_tumor])
        ax.scatter(x, y, s=22, color="tab:red", label="cases with tumour")
        for r, xi, yi in zip(with_tumor, x, y):
            ax.annotate(str(r["case"]), (xi, yi), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
    if free:
        # no volume to place them by: put them left of the smallest tumour, drawn differently
        left = (min(float(r["tumor_volume_ref_ml"]) for r in with_tumor) / 3) if with_tumor else 1.0
        y = [float(r["tumor_dice"]) for r in free]
        ax.scatter(
            [left] * len(free),
            y,
            s=30,
            marker="x",
            color="tab:gray",
            label="no tumour in reference (Dice 1 = none predicted)",
        )
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("reference tumour volume (ml)")
    ax.set_ylabel("tumour Dice (per case)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(
        fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False
    )  # below: never on a point
    fig.tight_layout()
    return _png(fig)
