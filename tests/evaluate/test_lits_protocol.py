"""The full LiTS metric set: agreement with medpy.metric, the scorer's surface/lesion rules, empty-case conventions.

Where our definitions and medpy's coincide (checked to 1e-6 below):
* Dice = ``medpy.metric.dc``; VOE = ``1 - medpy.metric.jc``; RVD = ``medpy.metric.ravd(pred, ref)``.
* MSD = ``medpy.metric.hd(..., connectivity=2)`` (max of the two directed Hausdorff distances) and
  ASSD = ``medpy.metric.assd(..., connectivity=2)`` (medpy >= 0.5 pools both directions' distances, as the scorer).
* RMSD has no medpy function: it is checked against medpy's own surface distances (the helper behind assd/hd).
Where they differ, and why:
* medpy's default ``connectivity=1`` erodes with the 6-neighbourhood; the LiTS scorer's surface uses the
  18-neighbourhood (``generate_binary_structure(3, 2)``), i.e. medpy ``connectivity=2``.
* The scorer calls ``medpy.metric.ravd(r, p)`` (arguments swapped); we report ``(|P| - |G|) / |G|``.
"""

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from lits.evaluate import metrics
from lits.evaluate.metrics import (
    LARGE,
    aggregate,
    case_metrics,
    dice,
    match_lesions,
    predicted_lesions,
    reference_lesions,
    relative_volume_difference,
    surface_distances,
    surface_metrics,
    surface_voxels,
    volume_overlap_error,
)

SPACING = (2.5, 0.8, 0.6)  # anisotropic, like a CT (slice thickness, in-plane)


def blobs(shape, n, rng, scale=0.25):
    """A few random ellipsoids (may touch the array border)."""
    m = np.zeros(shape, dtype=bool)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    for _ in range(n):
        c = rng.uniform(0, 1, len(shape)) * shape
        r = rng.uniform(0.3, 1.0, len(shape)) * np.array(shape) * scale + 1
        m |= sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r)) <= 1
    return m


def random_pair(seed, shape=(14, 40, 36)):
    rng = np.random.default_rng(seed)
    g = blobs(shape, 3, rng)
    # prediction: the reference moved and eroded/dilated a little, plus a blob of its own
    p = np.roll(g, tuple(rng.integers(-2, 3, len(shape))), axis=tuple(range(len(shape))))
    p = ndimage.binary_dilation(p) if seed % 2 else ndimage.binary_erosion(p)
    p |= blobs(shape, 1, rng, scale=0.12)
    assert p.any() and g.any()
    return p, g


# ------------------------------------------------------------------------------------- medpy agreement


@pytest.fixture(scope="module")
def medpy_binary():
    return pytest.importorskip("medpy.metric.binary", reason="medpy is in the dev extra (pip install -e '.[dev]')")


def _medpy_surface_distances(mb, a, b, spacing):
    """medpy's directed surface distances (the helper behind assd/hd) with the scorer's 18-neighbourhood."""
    return getattr(mb, "__surface_distances")(a, b, spacing, 2)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method", ["edt", "kdtree", "auto"])
def test_surface_metrics_match_medpy(seed, method, medpy_binary):
    p, g = random_pair(seed)
    ours = surface_metrics(p, g, SPACING, method=method)
    assert ours["assd"] == pytest.approx(medpy_binary.assd(p, g, SPACING, connectivity=2), abs=1e-6)
    assert ours["msd"] == pytest.approx(medpy_binary.hd(p, g, SPACING, connectivity=2), abs=1e-6)
    d = np.concatenate(
        [_medpy_surface_distances(medpy_binary, p, g, SPACING), _medpy_surface_distances(medpy_binary, g, p, SPACING)]
    )
    assert ours["rmsd"] == pytest.approx(math.sqrt(np.mean(d**2)), abs=1e-6)
    # the values are not trivially equal to something else: a real, non-zero disagreement between the masks
    assert ours["msd"] > ours["rmsd"] > ours["assd"] > 0


@pytest.mark.parametrize("seed", range(6))
def test_directed_surface_distances_match_medpy(seed, medpy_binary):
    p, g = random_pair(seed)
    d_p, d_g = surface_distances(p, g, SPACING, method="edt")
    np.testing.assert_allclose(np.sort(d_p), np.sort(_medpy_surface_distances(medpy_binary, p, g, SPACING)), atol=1e-9)
    np.testing.assert_allclose(np.sort(d_g), np.sort(_medpy_surface_distances(medpy_binary, g, p, SPACING)), atol=1e-9)
    k_p, k_g = surface_distances(p, g, SPACING, method="kdtree")
    np.testing.assert_allclose(k_p, d_p, atol=1e-9)  # same order (C order of the surface voxels)
    np.testing.assert_allclose(k_g, d_g, atol=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_overlap_metrics_match_medpy(seed, medpy_binary):
    p, g = random_pair(seed)
    d = dice(p, g, empty_score=1.0)
    assert d == pytest.approx(medpy_binary.dc(p, g), abs=1e-12)
    assert volume_overlap_error(d) == pytest.approx(1 - medpy_binary.jc(p, g), abs=1e-12)
    rvd = relative_volume_difference(int(p.sum()), int(g.sum()))
    assert rvd == pytest.approx(medpy_binary.ravd(p, g), abs=1e-12)
    assert rvd != pytest.approx(medpy_binary.ravd(g, p))  # the scorer's argument order gives another number


@pytest.mark.parametrize("seed", range(4))
def test_case_metrics_match_medpy_on_label_maps(seed, medpy_binary):
    """Liver (label >= 1) and tumour (label == 2) rows, computed with cropping, equal medpy on the whole volume."""
    rng = np.random.default_rng(50 + seed)
    shape = (16, 48, 44)
    ref = blobs(shape, 2, rng, scale=0.35).astype(np.uint8)
    pred = np.roll(ref, (1, -2, 1), axis=(0, 1, 2)).copy()
    ref[blobs(shape, 3, rng, scale=0.12) & (ref > 0)] = 2
    pred[np.roll(ref == 2, (0, 1, 1), axis=(0, 1, 2)) & (pred > 0)] = 2
    pred[blobs(shape, 1, rng, scale=0.08) & (pred > 0)] = 2
    row = case_metrics(pred, ref, SPACING)
    for s, fn in (("liver", lambda a: a >= 1), ("tumor", lambda a: a == 2)):
        p, g = fn(pred), fn(ref)
        assert p.any() and g.any()
        assert row[f"{s}_dice"] == pytest.approx(medpy_binary.dc(p, g), abs=1e-6)
        assert row[f"{s}_voe"] == pytest.approx(1 - medpy_binary.jc(p, g), abs=1e-6)
        assert row[f"{s}_rvd"] == pytest.approx(medpy_binary.ravd(p, g), abs=1e-6)
        assert row[f"{s}_assd"] == pytest.approx(medpy_binary.assd(p, g, SPACING, connectivity=2), abs=1e-6)
        assert row[f"{s}_msd"] == pytest.approx(medpy_binary.hd(p, g, SPACING, connectivity=2), abs=1e-6)


def test_medpy_default_connectivity_is_not_the_scorers_surface(medpy_binary):
    """Documented difference: medpy's default 6-neighbourhood surface gives another ASSD than the scorer's 18."""
    p, g = random_pair(3)
    ours = surface_metrics(p, g, SPACING)["assd"]
    assert ours != pytest.approx(medpy_binary.assd(p, g, SPACING), abs=1e-3)
    assert ours == pytest.approx(medpy_binary.assd(p, g, SPACING, connectivity=2), abs=1e-6)


# ------------------------------------------------------------------------------- surfaces, hand-checked


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_surface_voxels_equal_scipy_erosion_xor(ndim):
    rng = np.random.default_rng(ndim)
    shape = (9, 11, 7)[:ndim]
    for _ in range(5):
        m = rng.random(shape) < 0.7  # dense, touching every border
        st = ndimage.generate_binary_structure(ndim, 2)
        expected = m ^ ndimage.binary_erosion(m, structure=st, border_value=0)
        np.testing.assert_array_equal(surface_voxels(m), expected)


def test_surface_is_18_neighbourhood_and_border_is_background():
    m = np.zeros((5, 5, 5), bool)
    m[1:4, 1:4, 1:4] = True
    s = surface_voxels(m)
    assert s.sum() == 26 and not s[2, 2, 2]  # 3x3x3 cube: only the centre is interior
    full = np.ones((3, 3, 3), bool)  # fills the array: outside counts as background
    assert surface_voxels(full).sum() == 26
    # a voxel whose only background neighbour is an in-plane EDGE neighbour is surface (18-, not 6-neighbourhood)
    big = np.ones((5, 5, 5), bool)
    big[2, 1, 1] = False
    assert surface_voxels(big)[2, 2, 2]
    big[2, 1, 1] = True
    big[1, 1, 1] = False  # corner neighbour only: not in the 18-neighbourhood
    assert not surface_voxels(big)[2, 2, 2]


def test_surface_metrics_hand_values_in_mm():
    a = np.zeros((6, 4, 4), bool)
    b = a.copy()
    a[1, 1, 1] = True
    b[4, 1, 1] = True  # three slices apart
    out = surface_metrics(a, b, (2.5, 0.7, 0.7))
    assert out == pytest.approx({"assd": 7.5, "msd": 7.5, "rmsd": 7.5})
    # two slabs offset by one slice: every surface voxel of one is 0 (shared) or one slice away
    a = np.zeros((6, 4, 4), bool)
    b = a.copy()
    a[1:3] = True
    b[2:4] = True
    out = surface_metrics(a, b, (3.0, 1.0, 1.0))
    assert out["msd"] == pytest.approx(3.0)
    assert 0 < out["assd"] < 3.0


def test_cropping_is_exact_far_from_the_origin():
    p, g = random_pair(1, shape=(10, 30, 30))
    big_p = np.zeros((60, 200, 180), bool)
    big_g = big_p.copy()
    big_p[40:50, 150:180, 100:130] = p
    big_g[40:50, 150:180, 100:130] = g
    assert surface_metrics(big_p, big_g, SPACING) == pytest.approx(surface_metrics(p, g, SPACING), abs=1e-9)


def test_surface_metrics_empty_mask_sentinel_and_errors():
    a = np.zeros((3, 4, 4), bool)
    b = a.copy()
    b[1, 1, 1] = True
    assert surface_metrics(a, b, SPACING) == {"assd": LARGE, "msd": LARGE, "rmsd": LARGE}
    assert surface_metrics(b, a, SPACING) == {"assd": LARGE, "msd": LARGE, "rmsd": LARGE}
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(a, b, SPACING)
    with pytest.raises(ValueError, match="method"):
        surface_distances(b, b, SPACING, method="fast")


# ------------------------------------------------------------------------------------- lesion matching


def _vol(shape=(5, 24, 24)):
    """Label map with liver everywhere; tumours are drawn into it."""
    return np.ones(shape, np.uint8)


def _lesions(pred, ref):
    return case_metrics(pred, ref, SPACING)


def test_reference_lesions_dilated_in_plane_only():
    ref = np.zeros((5, 12, 12), bool)
    ref[2, 3:5, 3:5] = True
    ref[2, 3:5, 7:9] = True  # two voxel gap in-plane: the scorer's one-voxel axial dilation joins them
    assert reference_lesions(ref)[1] == 1
    assert predicted_lesions(ref)[1] == 2  # predictions are not dilated
    ref = np.zeros((5, 12, 12), bool)
    ref[0, 3:5, 3:5] = True
    ref[2, 3:5, 3:5] = True  # one slice gap: no dilation along Z -> two lesions
    assert reference_lesions(ref)[1] == 2
    ref = np.zeros((5, 12, 12), bool)
    ref[2, 3:5, 3:5] = True
    ref[2, 3:5, 8:10] = True  # three voxel gap: two lesions
    labels, n = reference_lesions(ref)
    assert n == 2 and set(np.unique(labels[ref])) == {1, 2} and not labels[~ref].any()  # trimmed back


def test_lesions_are_6_connected():
    m = np.zeros((3, 5, 5), bool)
    m[1, 1, 1] = m[1, 2, 2] = True  # edge-adjacent only
    assert predicted_lesions(m)[1] == 2
    m[1, 1, 2] = True
    assert predicted_lesions(m)[1] == 1


def test_detection_perfect_miss_and_false_positive():
    ref = _vol()
    ref[1:4, 2:6, 2:6] = 2  # lesion A (detected)
    ref[1:4, 14:18, 14:18] = 2  # lesion B (missed)
    pred = _vol()
    pred[1:4, 2:6, 2:6] = 2
    pred[1:3, 2:5, 18:22] = 2  # false positive, touches no reference lesion
    row = _lesions(pred, ref)
    assert (row["tumor_lesions_ref"], row["tumor_lesions_pred"]) == (2, 2)
    for t in ("iou50", "iou0"):
        assert (row[f"tumor_lesion_tp_{t}"], row[f"tumor_lesion_fp_{t}"], row[f"tumor_lesion_fn_{t}"]) == (1, 1, 1)
    assert row["tumor_lesion_merge_errors"] == row["tumor_lesion_split_errors"] == 0
    # lesion-wise scores: only the detected lesion, a perfect one
    assert row["tumor_lesion_dice_sum"] == pytest.approx(1.0)
    assert row["tumor_lesion_assd_sum"] == 0.0 and row["tumor_lesion_voe_sum"] == 0.0


def test_detection_merge_one_prediction_over_two_lesions():
    ref = _vol()
    ref[1:4, 4:10, 4:8] = 2
    ref[1:4, 4:10, 11:15] = 2  # three voxels apart in-plane: two reference lesions
    pred = _vol()
    pred[1:4, 4:10, 4:15] = 2  # one prediction bridging both: IoU = 144 / 198
    row = _lesions(pred, ref)
    assert (row["tumor_lesions_ref"], row["tumor_lesions_pred"]) == (2, 1)
    assert row["tumor_lesion_merge_errors"] == 1 and row["tumor_lesion_split_errors"] == 0
    assert (row["tumor_lesion_tp_iou50"], row["tumor_lesion_fp_iou50"], row["tumor_lesion_fn_iou50"]) == (2, 0, 0)
    # a merged group scores once per reference lesion in it: Dice 2*144/(198+144) counted twice
    assert row["tumor_lesion_dice_sum"] == pytest.approx(2 * (2 * 144 / 342))
    assert row["tumor_dice"] == pytest.approx(2 * 144 / 342)


def test_detection_merge_below_threshold_counts_one_fn_per_group():
    ref = _vol((5, 30, 30))
    ref[2, 4:8, 4:8] = 2
    ref[2, 4:8, 11:15] = 2  # 32 reference voxels in two lesions
    pred = _vol((5, 30, 30))
    pred[1:4, 2:12, 2:17] = 2  # covers both, but IoU = 32 / 450 < 0.5
    row = _lesions(pred, ref)
    assert row["tumor_lesion_merge_errors"] == 1
    # scorer: undetected merged group -> its prediction is an FP and the group ONE false negative
    assert (row["tumor_lesion_tp_iou50"], row["tumor_lesion_fp_iou50"], row["tumor_lesion_fn_iou50"]) == (0, 1, 1)
    assert (row["tumor_lesion_tp_iou0"], row["tumor_lesion_fp_iou0"], row["tumor_lesion_fn_iou0"]) == (2, 0, 0)


def test_detection_split_two_predictions_in_one_lesion():
    ref = _vol()
    ref[1:4, 4:10, 4:14] = 2  # one lesion, 180 voxels
    pred = _vol()
    pred[1:4, 4:10, 4:8] = 2
    pred[1:4, 4:10, 10:14] = 2  # two predictions (72 + 72 voxels) inside it: merged, IoU = 144 / 180
    row = _lesions(pred, ref)
    assert (row["tumor_lesions_ref"], row["tumor_lesions_pred"]) == (1, 2)
    assert row["tumor_lesion_split_errors"] == 1 and row["tumor_lesion_merge_errors"] == 0
    assert (row["tumor_lesion_tp_iou50"], row["tumor_lesion_fp_iou50"], row["tumor_lesion_fn_iou50"]) == (1, 0, 0)
    # if the split group is not detected, BOTH predictions become false positives
    pred[1:4, 4:10, 5:8] = 1
    pred[1:4, 4:10, 10:13] = 1  # now 2 * 18 voxels: IoU = 36 / 180
    row = _lesions(pred, ref)
    assert row["tumor_lesion_split_errors"] == 1
    assert (row["tumor_lesion_tp_iou50"], row["tumor_lesion_fp_iou50"], row["tumor_lesion_fn_iou50"]) == (0, 2, 1)
    assert (row["tumor_lesion_tp_iou0"], row["tumor_lesion_fp_iou0"], row["tumor_lesion_fn_iou0"]) == (1, 0, 0)


def test_detection_iou_threshold_is_strict():
    ref = _vol()
    ref[1:3, 4:8, 4:6] = 2  # 16 voxels
    pred = _vol()
    pred[1:3, 4:8, 4:5] = 2  # 8 voxels inside: IoU exactly 0.5 -> not detected at > 0.5
    row = _lesions(pred, ref)
    assert (row["tumor_lesion_tp_iou50"], row["tumor_lesion_fp_iou50"], row["tumor_lesion_fn_iou50"]) == (0, 1, 1)
    assert (row["tumor_lesion_tp_iou0"], row["tumor_lesion_fp_iou0"], row["tumor_lesion_fn_iou0"]) == (1, 0, 0)
    pred[1, 4, 5] = 2  # 9 / 16 > 0.5
    assert _lesions(pred, ref)["tumor_lesion_tp_iou50"] == 1


def test_detection_reference_goes_to_the_prediction_overlapping_it_most():
    """Prediction A spans lesion 1 and a sliver of lesion 2, B covers most of lesion 2: no merge, both found."""
    ref = np.zeros((3, 12, 30), np.int32)
    ref[1, 2:8, 2:8] = 1
    ref[1, 2:8, 12:20] = 2
    pred = np.zeros_like(ref)
    pred[1, 2:8, 2:13] = 1  # 36 voxels of lesion 1, 6 of lesion 2
    pred[1, 2:8, 14:20] = 2  # 36 voxels of lesion 2
    m = match_lesions(pred, ref)
    assert m.merge_errors == 0 and m.split_errors == 0
    assert m.tp == {"iou50": 2, "iou0": 2} and m.fp == {"iou50": 0, "iou0": 0} and m.fn == {"iou50": 0, "iou0": 0}
    assert sorted((g.ref_ids, g.pred_ids) for g in m.groups) == [((1,), (1,)), ((2,), (2,))]


def test_detection_both_empty_and_tumour_free_reference():
    ref = _vol()
    row = _lesions(ref.copy(), ref)
    assert row["tumor_lesions_ref"] == row["tumor_lesions_pred"] == 0
    assert all(row[f"tumor_lesion_{c}_{t}"] == 0 for c in ("tp", "fp", "fn") for t in ("iou50", "iou0"))
    pred = ref.copy()
    pred[1:3, 2:5, 2:5] = 2
    row = _lesions(pred, ref)
    # the scorer returns early when the reference has no lesion: no FP counted there ...
    assert row["tumor_lesions_pred"] == 1 and row["tumor_lesion_fp_iou50"] == 0
    # ... so we report those predictions separately
    s = aggregate([row, _lesions(ref.copy(), ref)])
    assert s["tumor_lesion_fp_in_tumor_free_cases"] == 1


# ------------------------------------------------------------------------------- empty-case conventions


def test_empty_conventions_full_row():
    ref = np.zeros((4, 10, 10), np.uint8)
    ref[1:3, 2:8, 2:8] = 1
    # nothing predicted: liver Dice 0, VOE 1, distances/RVD sentinel; tumour both empty: Dice 1, VOE 0
    row = case_metrics(np.zeros_like(ref), ref, SPACING)
    assert row["liver_dice"] == 0.0 and row["liver_voe"] == 1.0
    assert all(row[f"liver_{m}"] == LARGE for m in ("rvd", "assd", "msd", "rmsd"))
    assert row["tumor_dice"] == 1.0 and row["tumor_voe"] == 0.0
    assert all(row[f"tumor_{m}"] == LARGE for m in ("rvd", "assd", "msd", "rmsd"))
    assert row["tumor_burden_pred"] == LARGE and row["tumor_burden_ref"] == 0.0
    assert row["tumor_burden_error"] == LARGE
    # nothing anywhere
    row = case_metrics(np.zeros_like(ref), np.zeros_like(ref), SPACING)
    assert row["liver_dice"] == 0.0 and row["tumor_dice"] == 1.0 and row["liver_assd"] == LARGE
    # perfect liver, tumour only in the prediction
    pred = ref.copy()
    pred[1, 4, 4] = 2
    row = case_metrics(pred, ref, SPACING)
    assert row["liver_dice"] == 1.0 and row["liver_assd"] == 0.0 and row["liver_rvd"] == 0.0
    assert row["tumor_dice"] == 0.0 and row["tumor_voe"] == 1.0 and row["tumor_assd"] == LARGE


def test_case_metrics_values_are_plain_ints_and_floats():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 3, size=(6, 12, 12), dtype=np.uint8)
    ref = rng.integers(0, 3, size=(6, 12, 12), dtype=np.uint8)
    row = case_metrics(pred, ref, SPACING)
    assert all(type(v) in (int, float) for v in row.values()), {k: type(v) for k, v in row.items()}
    json.dumps(row)
    expected = set(metrics.COUNT_KEYS) | set(metrics.PER_CASE_MEAN_KEYS) | set(metrics.SEGMENTATION_KEYS)
    expected |= set(metrics.LESION_KEYS) | set(metrics.LESION_SCORE_KEYS) | set(metrics.SIZE_BIN_KEYS)
    expected |= set(metrics.BURDEN_KEYS)
    assert set(row) == expected


def test_detail_dice_is_the_overlap_row():
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 3, size=(6, 12, 12), dtype=np.uint8)
    ref = rng.integers(0, 3, size=(6, 12, 12), dtype=np.uint8)
    full = case_metrics(pred, ref, SPACING)
    small = case_metrics(pred, ref, SPACING, detail="dice")
    assert set(small) == set(metrics.PER_CASE_MEAN_KEYS) | set(metrics.COUNT_KEYS)
    assert all(full[k] == v for k, v in small.items())
    with pytest.raises(ValueError, match="detail"):
        case_metrics(pred, ref, SPACING, detail="everything")
    with pytest.raises(ValueError, match="detail='dice'"):
        aggregate([full, small])


# ------------------------------------------------------------------------------------------- aggregate


def _row(**over):
    row = case_metrics(np.ones((2, 3, 3), np.uint8), np.ones((2, 3, 3), np.uint8), (1.0, 1.0, 1.0))
    row.update(over)
    return row


def test_aggregate_sentinels_kept_out_of_means():
    rows = [_row(liver_assd=2.0, tumor_assd=LARGE), _row(liver_assd=4.0, tumor_assd=1.0), _row(liver_assd=LARGE)]
    s = aggregate(rows)
    assert s["liver_assd_mean"] == pytest.approx(3.0) and s["liver_assd_sentinel_cases"] == 1
    # _row has no tumour: tumour distances are sentinels unless overridden
    assert s["tumor_assd_mean"] == pytest.approx(1.0) and s["tumor_assd_sentinel_cases"] == 2
    assert s["tumor_msd_sentinel_cases"] == 3 and math.isnan(s["tumor_msd_mean"])
    assert s["tumor_both_empty_cases"] == 3


def test_aggregate_detection_sums_counts_over_cases():
    a = _row(tumor_lesion_tp_iou50=1, tumor_lesion_fp_iou50=1, tumor_lesion_fn_iou50=0)
    b = _row(tumor_lesion_tp_iou50=3, tumor_lesion_fp_iou50=0, tumor_lesion_fn_iou50=3)
    s = aggregate([a, b])
    assert s["tumor_lesion_precision_iou50"] == pytest.approx(4 / 5)  # not the mean of 1/2 and 3/3
    assert s["tumor_lesion_recall_iou50"] == pytest.approx(4 / 7)
    assert (s["tumor_lesion_tp_iou50"], s["tumor_lesion_fp_iou50"], s["tumor_lesion_fn_iou50"]) == (4, 1, 3)
    assert s["tumor_lesion_precision_iou0"] == 0.0 and s["tumor_lesion_recall_iou0"] == 0.0  # no lesions: scorer's 0


def test_aggregate_lesion_scores_average_over_detected_lesions():
    a = _row(tumor_lesion_tp_iou0=2, tumor_lesion_dice_sum=1.6, tumor_lesion_assd_sum=3.0)
    b = _row(tumor_lesion_tp_iou0=1, tumor_lesion_dice_sum=0.5, tumor_lesion_assd_sum=3.0)
    s = aggregate([a, b])
    assert s["tumor_lesion_dice_mean"] == pytest.approx(2.1 / 3)
    assert s["tumor_lesion_assd_mean"] == pytest.approx(2.0)


def test_tumour_burden_hand_computed():
    def case(liver, tumour_ref, tumour_pred):
        ref = np.zeros(200, np.uint8)
        ref[:liver] = 1
        ref[:tumour_ref] = 2
        pred = np.zeros(200, np.uint8)
        pred[:liver] = 1
        pred[:tumour_pred] = 2
        return case_metrics(pred, ref, (1.0,))

    a = case(100, 10, 20)  # ref 0.1, pred 0.2 -> error -0.1
    b = case(100, 10, 5)  # ref 0.1, pred 0.05 -> error +0.05
    assert a["tumor_burden_ref"] == pytest.approx(0.1) and a["tumor_burden_pred"] == pytest.approx(0.2)
    assert a["tumor_burden_error"] == pytest.approx(-0.1) and b["tumor_burden_error"] == pytest.approx(0.05)
    no_liver = case_metrics(np.zeros(200, np.uint8), np.ones(200, np.uint8), (1.0,))
    s = aggregate([a, b, no_liver])
    assert s["tumor_burden_rmse"] == pytest.approx(math.sqrt((0.01 + 0.0025) / 2))
    assert s["tumor_burden_max_error"] == pytest.approx(0.05)  # scorer: np.max of (ref - pred), signed
    assert s["tumor_burden_max_abs_error"] == pytest.approx(0.1)
    assert s["tumor_burden_sentinel_cases"] == 1


def test_aggregate_full_is_json_friendly():
    p, g = random_pair(0)
    pred = p.astype(np.uint8)
    ref = g.astype(np.uint8)
    pred[ndimage.binary_erosion(p, iterations=2)] = 2
    ref[ndimage.binary_erosion(g, iterations=2)] = 2
    s = aggregate([case_metrics(pred, ref, SPACING), case_metrics(ref, ref, SPACING)])
    assert all(type(v) in (int, float) for v in s.values())
    json.dumps(s)
    assert s["liver_dice_per_case"] < 1.0 and s["tumor_lesion_recall_iou0"] > 0
