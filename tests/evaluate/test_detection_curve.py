"""The lesion detection curve: recall against false positives per case over the operating threshold."""

import numpy as np
import pytest

from lits.core.config import PostprocessConfig
from lits.evaluate.detection import at_threshold, case_curve, curve, curve_png, lesion_counts

POST = PostprocessConfig(largest_liver_component=False, min_tumor_voxels=0)


def case():
    """Liver everywhere; three tumours whose probability is 0.95, 0.65 and 0.35 inside them, and a false blob 0.55."""
    label = np.ones((10, 40, 60), np.uint8)
    tumor = np.zeros(label.shape, np.float32)
    for (z, y, x), p in zip([(2, 5, 5), (2, 5, 25), (5, 25, 45)], (0.95, 0.65, 0.35)):
        label[z : z + 4, y : y + 6, x : x + 6] = 2
        tumor[z : z + 4, y : y + 6, x : x + 6] = p
    tumor[6:9, 28:32, 8:12] = 0.55  # no tumour there
    liver = np.full(label.shape, 0.9, np.float32)
    return np.stack([liver, tumor]), label


def test_counts_follow_the_threshold():
    probs, label = case()
    rows = {r["threshold"]: r for r in case_curve(probs, label, POST, (1.0, 1.0, 1.0))}
    assert (rows[0.3]["tp_iou50"], rows[0.3]["fp_iou50"], rows[0.3]["fn_iou50"]) == (3, 1, 0)
    assert (rows[0.6]["tp_iou50"], rows[0.6]["fp_iou50"], rows[0.6]["fn_iou50"]) == (2, 0, 1)
    assert (rows[0.9]["tp_iou50"], rows[0.9]["fp_iou50"], rows[0.9]["fn_iou50"]) == (1, 0, 2)
    assert rows[0.3]["pred"] == 4 and rows[0.9]["pred"] == 1


def test_points_sum_over_cases():
    probs, label = case()
    one = case_curve(probs, label, POST, (1.0, 1.0, 1.0))
    no_tumour = np.where(label == 2, 1, label).astype(np.uint8)
    other = case_curve(probs, no_tumour, POST, (1.0, 1.0, 1.0))  # every prediction is false here
    points = {p["threshold"]: p for p in curve([one, other])}
    assert points[0.3]["recall_iou50"] == 1.0  # the tumour-free case adds no reference lesion
    # the scorer counts no false positives in a case without reference lesions (its early return)
    assert points[0.3]["fp_per_case_iou50"] == pytest.approx(1 / 2)
    assert points[0.6]["recall_iou50"] == pytest.approx(2 / 3) and points[0.6]["precision_iou50"] == 1.0


def test_hysteresis_moves_its_high_bound_with_the_threshold():
    post = PostprocessConfig(hysteresis=True, hysteresis_low=0.3, hysteresis_high=0.5)
    assert (at_threshold(post, 0.7).hysteresis_high, at_threshold(post, 0.7).hysteresis_low) == (0.7, 0.3)
    assert (at_threshold(post, 0.2).hysteresis_high, at_threshold(post, 0.2).hysteresis_low) == (0.2, 0.2)


def test_no_tumour_anywhere_counts_nothing():
    empty = np.ones((3, 8, 8), np.uint8)
    assert all(v == 0 for v in lesion_counts(empty, empty).values())


def test_the_curve_is_a_png():
    probs, label = case()
    png = curve_png(curve([case_curve(probs, label, POST, (1.0, 1.0, 1.0))]), 0.5, "test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_thresholds_at_one_point_share_one_label():
    """Several thresholds at the origin (nothing found, nothing false) are one label '0.5-0.9', not a pile."""
    from lits.evaluate.detection import _same_point_thresholds

    points = [{"threshold": t} for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
    groups = _same_point_thresholds(points, [2.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.0, 0.0, 0.0])
    assert groups == {(2.0, 1.0): [0.1], (1.0, 0.5): [0.3], (0.0, 0.0): [0.5, 0.7, 0.9]}
