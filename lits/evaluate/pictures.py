"""Pictures that explain errors: slice montages, validation panels for TensorBoard, the Dice-vs-volume plot.

Every slice is shown the same way, as one row of three panels:
  CT          the windowed slice, its HU window and the patient's orientation marked (radiological view: the
              patient's right on the left of the picture, anterior up)
  errors      every voxel coloured by what the prediction got right or wrong: tumour true positive, false positive,
              false negative in strong colours, the same for the liver in light tints
  probability the network's tumour probability (0..1 colour bar) with the reference tumour outlined

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), so pictures work on
headless machines and in worker processes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# (name, RGB, opacity): tumour classes drawn over liver classes; liver true positives only tinted
ERROR_CLASSES = (
    ("liver correct", (0.35, 0.85, 0.35), 0.22),
    ("liver missed (FN)", (0.62, 0.35, 1.0), 0.55),
    ("liver extra (FP)", (1.0, 0.62, 0.1), 0.55),
    ("tumour correct (TP)", (1.0, 0.92, 0.0), 0.85),
    ("tumour missed (FN)", (0.0, 0.75, 1.0), 0.9),
    ("tumour extra (FP)", (1.0, 0.1, 0.35), 0.9),
)
PANELS = ("CT", "errors: prediction vs reference", "tumour probability")


@dataclass
class SliceView:
    """One axial slice to draw (canonical RAS arrays, (Y, X)): image in [0, 1] (the HU window), label maps."""

    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    probability: np.ndarray | None  # tumour probability, or None (predictions scored as given)
    caption: str  # row label, e.g. "case 12, z=40"


def error_masks(reference: np.ndarray, prediction: np.ndarray) -> list[np.ndarray]:
    """Boolean masks in ERROR_CLASSES order. Liver = labels >= 1 (tumour lies in the liver), tumour = label 2."""
    liver_ref, liver_pred = reference >= 1, prediction >= 1
    tumor_ref, tumor_pred = reference == 2, prediction == 2
    return [
        liver_ref & liver_pred,
        liver_ref & ~liver_pred,
        ~liver_ref & liver_pred,
        tumor_ref & tumor_pred,
        tumor_ref & ~tumor_pred,
        ~tumor_ref & tumor_pred,
    ]


def error_overlay(image: np.ndarray, reference: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """(H, W) image in [0, 1] + two label maps -> (H, W, 3) RGB with every error class blended in its colour."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)
    for (_, color, opacity), mask in zip(ERROR_CLASSES, error_masks(reference, prediction)):
        rgb[mask] = (1 - opacity) * rgb[mask] + opacity * np.asarray(color, np.float32)
    return rgb


def radiological(array: np.ndarray) -> np.ndarray:
    """Canonical RAS (Y, X) slice -> the radiological view (anterior up, the patient's right on the left)."""
    return np.asarray(array)[::-1, ::-1]


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


def crop_box(masks: Sequence[np.ndarray], margin: int | None) -> tuple[slice, slice]:
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


def png_bytes(fig) -> bytes:
    """A matplotlib Figure as PNG bytes (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def figure_rgb(fig) -> np.ndarray:
    """A matplotlib Figure as an (H, W, 3) uint8 array (for TensorBoard)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _mark_orientation(ax, window: tuple[float, float] | None) -> None:
    style = dict(color="white", fontsize=9, fontweight="bold", transform=ax.transAxes)
    ax.text(0.02, 0.5, "R", ha="left", va="center", **style)
    ax.text(0.98, 0.5, "L", ha="right", va="center", **style)
    ax.text(0.5, 0.98, "A", ha="center", va="top", **style)
    ax.text(0.5, 0.02, "P", ha="center", va="bottom", **style)
    if window is not None:
        low, high = window
        text = f"W {high - low:g} / L {(high + low) / 2:g} HU"
        ax.text(0.02, 0.02, text, ha="left", va="bottom", color="yellow", fontsize=7, transform=ax.transAxes)


def _error_counts(view: SliceView) -> str:
    masks = error_masks(view.reference, view.prediction)
    tp, fn, fp = (int(m.sum()) for m in masks[3:])
    return f"tumour px: {tp} correct, {fn} missed, {fp} extra"


def draw_row(axes, view: SliceView, window: tuple[float, float] | None, colorbar_fig=None) -> None:
    """The three panels of one slice into `axes` (three matplotlib Axes)."""
    image = radiological(view.image)
    ref, pred = radiological(view.reference), radiological(view.prediction)
    axes[0].imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _mark_orientation(axes[0], window)
    axes[0].set_ylabel(view.caption, fontsize=9)
    axes[1].imshow(error_overlay(image, ref, pred), interpolation="nearest")
    axes[1].set_xlabel(_error_counts(view), fontsize=8)
    if view.probability is None:
        axes[2].text(0.5, 0.5, "no probabilities\n(predictions as given)", ha="center", va="center", fontsize=8)
    else:
        axes[2].imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        prob = np.clip(radiological(view.probability).astype(np.float32), 0, 1)
        shown = axes[2].imshow(
            prob, cmap="inferno", vmin=0, vmax=1, alpha=np.clip(prob * 2, 0, 0.9), interpolation="nearest"
        )
        if (ref == 2).any():
            axes[2].contour(ref == 2, levels=[0.5], colors="cyan", linewidths=0.8)
        if colorbar_fig is not None:  # in an inset, so the panel keeps the size of the other two
            bar = colorbar_fig.colorbar(shown, cax=axes[2].inset_axes((1.03, 0.0, 0.05, 1.0)), ticks=[0, 0.5, 1])
            bar.ax.tick_params(labelsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def _legend(fig, top: float) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=color, alpha=max(opacity, 0.5), label=name) for name, color, opacity in ERROR_CLASSES]
    handles.append(Line2D([], [], color="cyan", label="reference tumour outline (probability panel)"))
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, top))


def slices_figure(views: Sequence[SliceView], title: str, window: tuple[float, float] | None, panel_in: float = 3.2):
    """A Figure with one row of [CT | errors | probability] per view, the colour legend on top; rows as tall as the
    slices' aspect needs (plus a line for the error counts)."""
    from matplotlib.figure import Figure

    rows = len(views)
    height, width = np.asarray(views[0].image).shape[:2]
    panel_h = panel_in * min(2.0, max(0.4, height / width))
    caption, header, side = 0.45, 1.0, 0.9  # inches: error counts under a row, title and legend, row labels
    fig_w, fig_h = 3 * panel_in + 0.8 + side, rows * (panel_h + caption) + header
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    axes = fig.subplots(rows, 3, squeeze=False, gridspec_kw={"hspace": caption / panel_h, "wspace": 0.06})
    for row, view in zip(axes, views):
        draw_row(row, view, window, colorbar_fig=fig)
    for ax, name in zip(axes[0], PANELS):
        ax.set_title(name, fontsize=10)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / fig_h)
    _legend(fig, 1 - 0.38 / fig_h)
    fig.subplots_adjust(left=side / fig_w, right=1 - 0.8 / fig_w, bottom=caption / fig_h, top=1 - header / fig_h)
    return fig


def montage_png(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    slices: Sequence[int],
    title: str,
    crop_margin: int | None = 24,
    probabilities: Sequence[np.ndarray] | None = None,
    window: tuple[float, float] | None = None,
) -> bytes:
    """PNG: one row per slice (index `slices[i]`) of [CT | errors | tumour probability], cropped around the liver.
    images in [0, 1] (the HU `window`), truths / preds label maps, probabilities tumour probability; all (Y, X)."""
    box = crop_box(list(truths) + list(preds), crop_margin)
    views = [
        SliceView(
            np.asarray(image, np.float32)[box],
            np.asarray(truth)[box],
            np.asarray(pred)[box],
            None if probabilities is None else np.asarray(probabilities[k])[box],
            f"z = {z}",
        )
        for k, (image, truth, pred, z) in enumerate(zip(images, truths, preds, slices))
    ]
    return png_bytes(slices_figure(views, title, window))


def validation_picture(views: Sequence[SliceView], title: str, window: tuple[float, float] | None) -> np.ndarray:
    """(H, W, 3) uint8: the validation cases' rows for TensorBoard (largest tumour error first, as given)."""
    return figure_rgb(slices_figure(views, title, window, panel_in=3.0))


def dice_volume_png(rows: Sequence[Mapping], title: str) -> bytes:
    """PNG: per-case tumour Dice against reference tumour volume (ml, log scale); tumour-free cases in their own
    narrow panel on the left (no volume to place them by)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig = Figure(figsize=(8.5, 5), dpi=100)
    free_ax, ax = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1, 6]})
    with_tumor = [r for r in rows if float(r["tumor_volume_ref_ml"]) > 0]
    free = [r for r in rows if float(r["tumor_volume_ref_ml"]) <= 0]
    label_box = dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.8)
    if with_tumor:
        x = np.array([float(r["tumor_volume_ref_ml"]) for r in with_tumor])
        y = np.array([float(r["tumor_dice"]) for r in with_tumor])
        ax.scatter(x, y, s=40, color="tab:red", zorder=3)
        for k, (r, xi, yi) in enumerate(zip(with_tumor, x, y)):
            ax.annotate(str(r["case"]), (xi, yi), fontsize=9, xytext=(5, 4 if k % 2 else -11),
                        textcoords="offset points", bbox=label_box)  # fmt: skip
        ax.set_xscale("log")
        low, high = x.min() / 2, x.max() * 2
        ax.set_xlim(low, high)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        ax.text(0.5, 0.5, "no case has tumour in its reference", ha="center", va="center", transform=ax.transAxes)
    for k, r in enumerate(free):
        free_ax.scatter([0], [float(r["tumor_dice"])], s=40, marker="x", color="tab:gray")
        free_ax.annotate(str(r["case"]), (0, float(r["tumor_dice"])), fontsize=9, xytext=(6, -4 + 8 * (k % 3)),
                         textcoords="offset points", bbox=label_box)  # fmt: skip
    free_ax.set_xticks([0], ["none"])
    free_ax.set_xlim(-0.5, 1.5)
    free_ax.set_title("no tumour\n(1 = none predicted)", fontsize=8)
    free_ax.set_ylim(-0.05, 1.05)
    free_ax.set_ylabel("tumour Dice of the case")
    ax.set_xlabel("reference tumour volume (ml, log scale)")
    for a in (free_ax, ax):
        a.grid(True, alpha=0.3)
        a.tick_params(labelsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)
