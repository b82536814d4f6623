"""Lesion finding by size: reference lesions binned by equivalent diameter, their detection and Dice per bin."""

import math

import numpy as np
import pytest

from lits.evaluate import metrics

SPACING = (1.0, 1.0, 1.0)  # 1 mm voxels: a cube of side s holds s**3 mm^3


def cube(volume, corner, side, label=2):
    z, y, x = corner
    volume[z : z + side, y : y + side, x : x + side] = label


def phantom():
    """Liver everywhere, three tumours: a 4 mm cube (d 5.0 mm), a 14 mm cube (d 17.4 mm), a 26 mm cube (d 32.2 mm).
    Prediction: the small one exact, the left half of the medium one, nothing of the large one."""
    ref = np.ones((40, 80, 80), np.uint8)
    pred = np.ones_like(ref)
    cube(ref, (2, 2, 2), 4)
    cube(pred, (2, 2, 2), 4)
    cube(ref, (2, 20, 20), 14)
    pred[2:16, 20:34, 20:27] = 2  # 7 of 14 columns: IoU 0.5 (not > 0.5), Dice 2/3
    cube(ref, (10, 45, 45), 26)
    return pred, ref


def test_equivalent_diameter_and_bins():
    assert metrics.equivalent_diameter_mm(4.0 / 3.0 * math.pi * 5**3) == pytest.approx(10.0)
    assert [metrics.size_bin(d) for d in (0.5, 9.99, 10.0, 19.9, 20.0, 300.0)] == [
        "under10mm", "under10mm", "10to20mm", "10to20mm", "over20mm", "over20mm"
    ]  # fmt: skip


def test_each_reference_lesion_is_counted_in_its_bin_with_its_dice():
    pred, ref = phantom()
    row = metrics.case_metrics(pred, ref, SPACING)
    assert [row[f"tumor_lesion_ref_{b}"] for b in metrics.SIZE_BINS] == [1, 1, 1]
    assert [row[f"tumor_lesion_tp_iou0_{b}"] for b in metrics.SIZE_BINS] == [1, 1, 0]
    assert [row[f"tumor_lesion_tp_iou50_{b}"] for b in metrics.SIZE_BINS] == [1, 0, 0]  # IoU 0.5 is not > 0.5
    dice = [row[f"tumor_lesion_dice_sum_{b}"] for b in metrics.SIZE_BINS]
    assert dice == pytest.approx([1.0, 2.0 / 3.0, 0.0])
    # the per-bin counts add up to the scorer's detection counts here (no merged lesions)
    assert sum(row[f"tumor_lesion_tp_iou50_{b}"] for b in metrics.SIZE_BINS) == row["tumor_lesion_tp_iou50"]


def test_aggregate_gives_recall_and_mean_dice_per_bin_over_cases():
    pred, ref = phantom()
    empty_pred = np.where(pred == 2, 1, pred).astype(np.uint8)
    rows = [metrics.case_metrics(pred, ref, SPACING), metrics.case_metrics(empty_pred, ref, SPACING)]
    summary = metrics.aggregate(rows)
    assert summary["tumor_lesion_ref_under10mm"] == 2
    assert summary["tumor_lesion_recall_iou50_under10mm"] == 0.5
    assert summary["tumor_lesion_recall_iou0_10to20mm"] == 0.5
    assert summary["tumor_lesion_dice_10to20mm"] == pytest.approx(1.0 / 3.0)
    assert summary["tumor_lesion_recall_iou0_over20mm"] == 0.0
    no_tumour = np.ones((4, 8, 8), np.uint8)
    empty = metrics.aggregate([metrics.case_metrics(no_tumour, no_tumour, SPACING)])
    assert math.isnan(empty["tumor_lesion_dice_under10mm"]) and empty["tumor_lesion_ref_under10mm"] == 0


def test_detail_lesions_is_the_full_rows_detection_without_surface_distances():
    pred, ref = phantom()
    full = metrics.case_metrics(pred, ref, SPACING)
    lesions = metrics.case_metrics(pred, ref, SPACING, detail="lesions")
    expected = set(metrics.COUNT_KEYS) | set(metrics.PER_CASE_MEAN_KEYS) | set(metrics.LESION_KEYS)
    assert set(lesions) == expected | set(metrics.SIZE_BIN_KEYS)
    assert all(lesions[k] == full[k] for k in lesions)
    summary = metrics.aggregate([lesions])
    assert summary["tumor_lesion_recall_iou50"] == full["tumor_lesion_tp_iou50"] / 3
    assert "tumor_lesion_dice_mean" not in summary and "tumor_assd_mean" not in summary


def test_validation_reports_lesion_finding_and_a_lesion_aware_score():
    from lits.core.vocabulary import validation_metrics
    from lits.train.validate import size_bin_metrics

    pred, ref = phantom()
    summary = metrics.aggregate([metrics.case_metrics(pred, ref, SPACING, detail="lesions")])
    out = {**validation_metrics({"raw": summary, "post": summary}), **size_bin_metrics(summary)}
    recall, precision = 1 / 3, 1 / 2  # 1 of 3 lesions at IoU > 0.5; 2 predictions, one of them detected
    assert out["val/lesion_recall_iou50"] == pytest.approx(recall)
    assert out["val/lesion_precision_iou50"] == pytest.approx(precision)
    f1 = 2 * recall * precision / (recall + precision)
    assert out["val/lesion_f1_iou50"] == pytest.approx(f1)
    assert out["val/lesion_score"] == pytest.approx((summary["tumor_dice_per_case"] + f1) / 2)
    assert out["val/lesion_dice_under10mm"] == 1.0 and out["val/lesion_dice_over20mm"] == 0.0
    no_tumour = np.ones((4, 8, 8), np.uint8)
    quiet = size_bin_metrics(metrics.aggregate([metrics.case_metrics(no_tumour, no_tumour, SPACING, "lesions")]))
    assert not any(k.startswith("val/lesion_dice_") for k in quiet)  # no lesions in a bin: no number for it


def test_the_lesion_aware_score_can_choose_best_pt():
    from conftest import compose_train

    from lits.core.config import TrainConfig, typed

    assert typed(TrainConfig, compose_train("trainer.monitor=val/lesion_score")).trainer.monitor == "val/lesion_score"
