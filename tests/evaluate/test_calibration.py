"""Calibration: the fitted temperature undoes a known miscalibration, the ECE measures it, the spec carries it to
every threshold."""

import numpy as np
import pytest
import torch

from lits.evaluate.calibration import calibrate, fit_temperature, region_sample, reliability, reliability_png
from lits.infer.predictor import predict_volume


def overconfident(n=200_000, factor=2.5, seed=0):
    """Labels drawn from sigmoid(z), probabilities reported as sigmoid(factor * z): too sure by `factor`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    return (1 / (1 + np.exp(-factor * z))).astype(np.float32), y


def test_the_fitted_temperature_undoes_the_miscalibration():
    p, y = overconfident(factor=2.5)
    factor = fit_temperature(p, y)
    assert factor == pytest.approx(2.5, rel=0.05)
    before, after = reliability(p, y), reliability(calibrate(p, factor), y)
    assert before.ece > 0.05 and after.ece < 0.01 and after.ece < before.ece / 5


def test_reliability_bins_and_ece_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    y = np.array([0, 0, 1, 0, 1])
    r = reliability(p, y, bins=10)
    assert r.count.tolist() == [2, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert r.frequency[9] == 0.5 and r.confidence[9] == pytest.approx(0.95)
    assert r.ece == pytest.approx((2 * 0.05 + 1 * 0.45 + 2 * 0.45) / 5)


def test_nothing_to_learn_leaves_the_head_alone():
    assert fit_temperature(np.array([0.2, 0.7]), np.array([0.0, 0.0])) == 1.0
    assert fit_temperature(np.empty(0), np.empty(0)) == 1.0


def test_the_sample_comes_from_the_liver_region():
    label = np.zeros((4, 40, 40), np.uint8)
    label[1:3, 10:20, 10:20] = 1
    label[2, 12:14, 12:14] = 2
    probs = np.zeros((2, 4, 40, 40), np.float32)
    liver_p, liver_y, tumour_p, tumour_y = region_sample(probs, label, max_voxels=10_000, margin=2)
    assert liver_y.size == 2 * 14 * 14 and liver_y.sum() == 2 * 100 and tumour_y.sum() == 4
    assert region_sample(probs, label, max_voxels=50)[0].size == 50


def test_predict_volume_applies_one_temperature_per_head():
    net = torch.nn.Conv2d(1, 2, 1, bias=False).eval()
    with torch.no_grad():
        net.weight.fill_(2.0)
    image = np.full((2, 8, 8), 0.5, np.float32)  # logits 1.0 on both heads
    probs = predict_volume(net, image, torch.device("cpu"), size_multiple=4, amp="off", temperature=(0.5, 2.0))
    assert probs[0, 0, 0, 0] == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert probs[1, 0, 0, 0] == pytest.approx(1 / (1 + np.exp(-0.5)))


def test_reliability_diagram_is_a_png():
    p, y = overconfident(n=5000)
    png = reliability_png({"raw": reliability(p, y), "calibrated": reliability(calibrate(p, 2.5), y)}, "tumour")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_reliability_points_carry_their_voxel_counts():
    from lits.evaluate.calibration import _compact

    assert [_compact(n) for n in (950, 12_345, 3_400_000)] == ["950", "12k", "3.4M"]
    probs, labels = overconfident(20_000)
    png = reliability_png({"tumour": reliability(probs, labels)}, "test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
