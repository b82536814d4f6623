"""LiTS Dice conventions: hand-built masks, empty cases, MONAI agreement, per-case vs global aggregation."""

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice

from lits.evaluate import metrics
from lits.evaluate.metrics import aggregate, case_metrics, dice, overlap


def _box(shape, *slices):
    m = np.zeros(shape, dtype=bool)
    m[tuple(slices)] = True
    return m


# ----------------------------------------------------------------------------------------------- dice()


def test_dice_known_value():
    p = _box((4, 10, 10), slice(0, 2), slice(0, 10), slice(0, 10))  # 200 voxels
    g = _box((4, 10, 10), slice(1, 3), slice(0, 10), slice(0, 10))  # 200 voxels, 100 shared
    assert dice(p, g, empty_score=1.0) == pytest.approx(2 * 100 / 400)
    assert dice(p, p, empty_score=0.0) == 1.0


def test_dice_small_exact():
    p = np.array([1, 1, 1, 0, 0], dtype=bool)
    g = np.array([0, 1, 1, 1, 0], dtype=bool)
    assert dice(p, g, empty_score=0.0) == pytest.approx(4 / 6)


@pytest.mark.parametrize("empty_score", [0.0, 1.0])
def test_dice_both_empty_returns_empty_score(empty_score):
    z = np.zeros((3, 4, 5), dtype=bool)
    assert dice(z, z, empty_score=empty_score) == empty_score


@pytest.mark.parametrize("empty_score", [0.0, 1.0])
def test_dice_one_empty_is_zero(empty_score):
    z = np.zeros((3, 4, 5), dtype=bool)
    m = z.copy()
    m[1, 1, 1] = True
    assert dice(z, m, empty_score) == 0.0
    assert dice(m, z, empty_score) == 0.0


def test_dice_shape_mismatch():
    with pytest.raises(ValueError):
        dice(np.zeros((2, 2), bool), np.zeros((2, 3), bool), 1.0)


@pytest.mark.parametrize("seed", range(5))
def test_dice_matches_monai(seed):
    rng = np.random.default_rng(seed)
    frac = rng.uniform(0.01, 0.6, size=2)
    p = rng.random((9, 17, 23)) < frac[0]
    g = rng.random((9, 17, 23)) < frac[1]
    ref = compute_dice(
        torch.from_numpy(p)[None, None].float(), torch.from_numpy(g)[None, None].float(), include_background=True
    ).item()
    assert dice(p, g, empty_score=1.0) == pytest.approx(ref, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_case_metrics_match_monai_per_structure(seed):
    rng = np.random.default_rng(100 + seed)
    pred = rng.integers(0, 3, size=(7, 20, 20), dtype=np.uint8)
    ref = rng.integers(0, 3, size=(7, 20, 20), dtype=np.uint8)
    row = case_metrics(pred, ref)
    for key, fn in (("liver_dice", lambda a: a >= 1), ("tumor_dice", lambda a: a == 2)):
        expected = compute_dice(
            torch.from_numpy(fn(pred))[None, None].float(), torch.from_numpy(fn(ref))[None, None].float()
        ).item()
        assert row[key] == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------------------------------ case_metrics


def _label(shape=(4, 8, 8)):
    return np.zeros(shape, dtype=np.uint8)


def test_case_metrics_tumour_counts_as_liver():
    ref = _label()
    ref[1:3, 2:6, 2:6] = 1  # 32 voxels liver
    ref[1:3, 3:5, 3:5] = 2  # 8 of them tumour
    pred = ref.copy()
    pred[pred == 2] = 1  # tumour predicted as plain liver
    row = case_metrics(pred, ref)
    assert row["liver_dice"] == 1.0  # liver = label >= 1 on both sides
    assert row["tumor_dice"] == 0.0
    assert (row["liver_pred_voxels"], row["liver_ref_voxels"], row["liver_intersection"]) == (32, 32, 32)
    assert (row["tumor_pred_voxels"], row["tumor_ref_voxels"], row["tumor_intersection"]) == (0, 8, 0)


def test_case_metrics_empty_conventions():
    ref = _label()
    ref[1:3, 2:6, 2:6] = 1
    # no tumour anywhere -> tumour Dice 1.0 (LiTS scorer)
    row = case_metrics(ref.copy(), ref)
    assert row["tumor_dice"] == 1.0 and row["liver_dice"] == 1.0
    # no predicted liver, reference liver present -> 0
    row = case_metrics(_label(), ref)
    assert row["liver_dice"] == 0.0 and row["tumor_dice"] == 1.0
    # nothing anywhere: liver 0.0 (scorer's liver_exists test fails), tumour 1.0
    row = case_metrics(_label(), _label())
    assert row["liver_dice"] == 0.0 and row["tumor_dice"] == 1.0
    # tumour predicted, none in reference -> 0
    pred = ref.copy()
    pred[2, 3, 3] = 2
    assert case_metrics(pred, ref)["tumor_dice"] == 0.0


def test_case_metrics_counts_are_ints_and_keys_plain():
    row = case_metrics(_label(), _label())
    expected = {
        "liver_dice",
        "tumor_dice",
        "liver_intersection",
        "liver_pred_voxels",
        "liver_ref_voxels",
        "tumor_intersection",
        "tumor_pred_voxels",
        "tumor_ref_voxels",
    }
    assert expected <= set(row)
    assert all("/" not in k for k in row)
    for k in metrics.COUNT_KEYS:
        assert isinstance(row[k], int)


def test_case_metrics_slabs_cover_whole_volume(monkeypatch):
    # force many tiny slabs, including a ragged last one, and compare with whole-volume counting
    monkeypatch.setattr(overlap, "_SLAB_VOXELS", 50)
    rng = np.random.default_rng(7)
    pred = rng.integers(0, 3, size=(11, 6, 7), dtype=np.uint8)
    ref = rng.integers(0, 3, size=(11, 6, 7), dtype=np.uint8)
    row = case_metrics(pred, ref)
    assert row["liver_intersection"] == np.count_nonzero((pred >= 1) & (ref >= 1))
    assert row["tumor_pred_voxels"] == np.count_nonzero(pred == 2)
    assert row["tumor_ref_voxels"] == np.count_nonzero(ref == 2)


def test_case_metrics_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(_label((4, 8, 8)), _label((4, 8, 9)))


def test_case_metrics_rejects_unknown_labels():
    pred = _label()
    pred[0, 0, 0] = 3
    with pytest.raises(ValueError, match="labels"):
        case_metrics(pred, _label())


def test_case_metrics_rejects_bad_spacing():
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(_label(), _label(), spacing=(1.0, 0.0, 1.0))


# --------------------------------------------------------------------------------------------- aggregate


def _two_cases():
    # case A: liver 10 pred / 10 ref / 8 shared; tumour 2 pred / 4 ref / 2 shared
    a_ref = np.zeros(40, np.uint8)
    a_ref[0:10] = 1
    a_ref[0:4] = 2
    a_pred = np.zeros(40, np.uint8)
    a_pred[2:12] = 1
    a_pred[2:4] = 2
    # case B: liver 20 pred / 30 ref / 20 shared; no tumour in either
    b_ref = np.zeros(40, np.uint8)
    b_ref[0:30] = 1
    b_pred = np.zeros(40, np.uint8)
    b_pred[5:25] = 1
    return [case_metrics(a_pred, a_ref, spacing=(1.0,)), case_metrics(b_pred, b_ref, spacing=(1.0,))]


def test_aggregate_per_case_vs_global_hand_computed():
    rows = _two_cases()
    assert rows[0]["liver_dice"] == pytest.approx(16 / 20)
    assert rows[0]["tumor_dice"] == pytest.approx(4 / 6)
    assert rows[1]["liver_dice"] == pytest.approx(40 / 50)
    assert rows[1]["tumor_dice"] == 1.0
    s = aggregate(rows)
    assert s["num_cases"] == 2
    assert s["liver_dice_per_case"] == pytest.approx((0.8 + 0.8) / 2)
    assert s["tumor_dice_per_case"] == pytest.approx((4 / 6 + 1.0) / 2)
    assert s["liver_dice_global"] == pytest.approx(2 * (8 + 20) / (10 + 10 + 20 + 30))  # 0.8
    assert s["tumor_dice_global"] == pytest.approx(2 * 2 / (2 + 4))  # empty case adds nothing
    assert s["tumor_dice_global"] != pytest.approx(s["tumor_dice_per_case"])


def test_aggregate_keys():
    # Dice-only rows (detail="dice", training-time validation) give exactly the Dice summary ...
    rows = [{k: r[k] for k in metrics.PER_CASE_MEAN_KEYS + metrics.COUNT_KEYS} for r in _two_cases()]
    s = aggregate(rows)
    assert set(s) == {
        "num_cases",
        "liver_dice_per_case",
        "tumor_dice_per_case",
        "liver_dice_global",
        "tumor_dice_global",
    }
    assert all("/" not in k for k in s)
    # ... full rows (the default) keep those keys with the same values and add the other LiTS groups
    full = aggregate(_two_cases())
    assert {k: full[k] for k in s} == s
    assert {"liver_assd_mean", "tumor_assd_sentinel_cases", "tumor_lesion_recall_iou50", "tumor_burden_rmse"} <= set(
        full
    )
    assert all("/" not in k for k in full)


def test_aggregate_all_empty_tumour_uses_empty_score():
    z = np.zeros((2, 3, 3), np.uint8)
    ref = z.copy()
    ref[0] = 1
    s = aggregate([case_metrics(ref, ref), case_metrics(ref, ref)])
    assert s["tumor_dice_global"] == 1.0 and s["tumor_dice_per_case"] == 1.0
    assert s["liver_dice_global"] == 1.0


def test_aggregate_ignores_extra_keys_and_rejects_bad_rows():
    rows = _two_cases()
    rows[0]["case"] = "volume-0"
    aggregate(rows)
    with pytest.raises(ValueError):
        aggregate([])
    with pytest.raises(ValueError, match="tumor_dice"):
        aggregate([{"liver_dice": 1.0}])


def test_aggregate_per_case_is_mean_over_three_cases():
    ref = np.zeros(10, np.uint8)
    ref[0:4] = 1
    preds = [ref.copy(), np.zeros(10, np.uint8), np.zeros(10, np.uint8)]
    preds[2][0:2] = 1  # Dice 2*2/(2+4) = 2/3
    rows = [case_metrics(p, ref, spacing=(1.0,)) for p in preds]
    s = aggregate(rows)
    assert s["liver_dice_per_case"] == pytest.approx((1.0 + 0.0 + 2 / 3) / 3)
    assert s["liver_dice_global"] == pytest.approx(2 * (4 + 0 + 2) / ((4 + 4) + (0 + 4) + (2 + 4)))
    assert s["num_cases"] == 3
