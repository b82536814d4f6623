"""The lesion detection curve (FROC-style): lesion recall against false positives per case as the probability
threshold of the configured post-processing moves, with the official matching rules at IoU > 0.5 and > 0.

Each point is the configured pipeline run with another tumour threshold (`tumor_threshold`; with hysteresis,
`hysteresis_high` = that threshold and the low bound no higher; the liver keeps its threshold), so the curve shows
what another operating point of this very pipeline would give; counts are summed over cases as the scorer sums them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lits.core.config import PostprocessConfig
from lits.evaluate.metrics import DETECTION_THRESHOLDS, match_lesions, reference_lesions
from lits.evaluate.metrics.geometry import bounding_box
from lits.evaluate.pictures import png_bytes
from lits.infer.postprocess import postprocess, predicted_lesions

CURVE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def at_threshold(post: PostprocessConfig, threshold: float) -> PostprocessConfig:
    """The configured post-processing with the tumour head's operating threshold moved to `threshold` (the liver
    keeps its own)."""
    if not post.hysteresis:
        return dataclasses.replace(post, tumor_threshold=threshold)
    return dataclasses.replace(
        post, tumor_threshold=threshold, hysteresis_high=threshold, hysteresis_low=min(post.hysteresis_low, threshold)
    )


def lesion_counts(pred_label: np.ndarray, ref_label: np.ndarray) -> dict[str, int]:
    """TP / FP / FN of tumour lesions at each IoU threshold (the scorer's rules), and the predicted lesion count."""
    box = bounding_box((pred_label == 2) | (ref_label == 2), 2)
    if box is None:
        return {f"{c}_{t}": 0 for t in DETECTION_THRESHOLDS for c in ("tp", "fp", "fn")} | {"pred": 0}
    pred_labels, n_pred = predicted_lesions(pred_label[box] == 2)
    match = match_lesions(pred_labels, reference_lesions(ref_label[box] == 2)[0])
    counts = {f"{c}_{t}": int(getattr(match, c)[t]) for t in DETECTION_THRESHOLDS for c in ("tp", "fp", "fn")}
    return counts | {"pred": n_pred}


def case_curve(
    probs: np.ndarray, ref_label: np.ndarray, post: PostprocessConfig, spacing, thresholds=CURVE_THRESHOLDS, image=None
) -> list[dict]:
    """One case: lesion counts of the configured pipeline at every threshold."""
    return [
        {
            "threshold": t,
            **lesion_counts(postprocess(probs[0], probs[1], at_threshold(post, t), spacing, image), ref_label),
        }
        for t in thresholds
    ]


def curve(per_case: list[list[dict]]) -> list[dict]:
    """Summed over cases, per threshold: recall and precision at IoU > 0.5 and > 0, false positives per case."""
    points = []
    for rows in zip(*per_case):
        total = {k: sum(r[k] for r in rows) for k in rows[0] if k != "threshold"}
        point = {"threshold": rows[0]["threshold"], "lesions_pred": total["pred"]}
        for t in DETECTION_THRESHOLDS:
            tp, fp, fn = total[f"tp_{t}"], total[f"fp_{t}"], total[f"fn_{t}"]
            point[f"recall_{t}"] = tp / (tp + fn) if tp + fn else 0.0
            point[f"precision_{t}"] = tp / (tp + fp) if tp + fp else 0.0
            point[f"fp_per_case_{t}"] = fp / len(rows)
        points.append(point)
    return points


def _same_point_thresholds(points: list[dict], x: list, y: list) -> dict[tuple, list[float]]:
    """{(x, y): the thresholds at that point}: thresholds that give the same recall and false positives share one
    label (e.g. '0.1-0.5' at the origin), instead of being written on top of each other."""
    groups: dict[tuple, list[float]] = {}
    for p, xi, yi in zip(points, x, y):
        groups.setdefault((round(float(xi), 6), round(float(yi), 6)), []).append(float(p["threshold"]))
    return groups


def curve_png(points: list[dict], operating: float, title: str) -> bytes:
    """PNG: lesion recall against false positives per case (both IoU rules), thresholds written at the points,
    the configured operating threshold circled."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.4), dpi=100)
    ax = fig.add_subplot()
    for t, style in (("iou50", "-o"), ("iou0", "--s")):
        x = [p[f"fp_per_case_{t}"] for p in points]
        y = [p[f"recall_{t}"] for p in points]
        ax.plot(x, y, style, markersize=4, label=f"IoU > {DETECTION_THRESHOLDS[t]:g}")
        if t == "iou50":
            for (xi, yi), thresholds in _same_point_thresholds(points, x, y).items():  # one label per point
                shown = f"{min(thresholds):g}" if len(thresholds) == 1 else f"{min(thresholds):g}-{max(thresholds):g}"
                ax.annotate(shown, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
            for p, xi, yi in zip(points, x, y):
                if abs(p["threshold"] - operating) < 1e-9:
                    ax.plot(
                        [xi],
                        [yi],
                        "o",
                        markersize=11,
                        markerfacecolor="none",
                        color="black",
                        label=f"configured threshold {operating:g}",
                    )
    ax.set_xlabel("false positive lesions per case")
    ax.set_ylabel("lesion recall")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)  # false positives are never negative
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return png_bytes(fig)
