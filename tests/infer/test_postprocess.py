"""Post-processing: each step removes its artefact, and switching the step off leaves the artefact in place."""

import dataclasses

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import ndimage

from lits.core.errors import LitsError
from lits.infer import postprocess as pp
from lits.infer.postprocess import PostprocessConfig, postprocess, probabilities_to_labels

SHAPE = (24, 48, 48)
ALL_OFF = PostprocessConfig(
    largest_liver_component=False, tumor_in_liver=False, min_tumor_voxels=0, fill_liver_holes=False
)


def _probs():
    return np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.float32)


def _phantom():
    """Big liver with one of each artefact; returns probs and the voxel coordinates of each artefact."""
    liver, tumor = _probs()
    liver[4:20, 8:32, 8:32] = 0.9  # main liver, 16*24*24 voxels
    tumor[8:14, 12:18, 12:18] = 0.8  # real tumour inside the liver (216 voxels)
    liver[4:8, 38:44, 38:44] = 0.9  # second, smaller liver blob (144 voxels), separated by a gap
    # tumour protruding from the liver face x=31 out to x=39 (connected to the liver, so the largest
    # component keeps it; its far part is > 2 voxels from the liver)
    tumor[14:18, 20:24, 28:40] = 0.8
    # 49-voxel tumour component inside the liver (7x7x1 plate), far from the other tumours
    tumor[17, 22:29, 10:17] = 0.8
    # enclosed cavity in the liver (3x3x3), away from everything else
    liver[15:18, 10:13, 22:25] = 0.1
    where = {
        "second_liver": (6, 40, 40),
        "far_protrusion": (16, 22, 38),
        "small_tumour": (17, 25, 13),
        "hole": (16, 11, 23),
        "real_tumour": (10, 14, 14),
    }
    return liver, tumor, where


# ------------------------------------------------------------------------------------ raw thresholding


def test_probabilities_to_labels():
    liver, tumor = _probs()
    liver[0, 0, 0:3] = (0.4, 0.5, 0.6)
    tumor[1, 0, 0] = 0.9  # tumour without liver probability still labelled 2
    tumor[0, 0, 2] = 0.7
    lab = probabilities_to_labels(liver, tumor, threshold=0.5)
    assert lab.dtype == np.uint8 and lab.shape == SHAPE
    assert lab[0, 0, 0] == 0 and lab[0, 0, 1] == 0  # strictly greater than the threshold
    assert lab[0, 0, 2] == 2 and lab[1, 0, 0] == 2
    assert np.count_nonzero(lab) == 2
    lab = probabilities_to_labels(liver, tumor, threshold=0.45)
    assert lab[0, 0, 1] == 1 and np.count_nonzero(lab == 1) == 1
    lab = probabilities_to_labels(liver, tumor, threshold=0.5, tumor_threshold=0.8)  # its own cut for the tumour
    assert lab[0, 0, 2] == 1 and lab[1, 0, 0] == 2


def test_all_steps_off_equals_raw_labels():
    liver, tumor, _ = _phantom()
    np.testing.assert_array_equal(postprocess(liver, tumor, ALL_OFF), probabilities_to_labels(liver, tumor))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        postprocess(np.zeros((4, 5, 6)), np.zeros((4, 5, 7)), PostprocessConfig())


# ------------------------------------------------------------------------------------------ single steps


def test_largest_liver_component_removes_second_blob():
    liver, tumor, w = _phantom()
    cfg = dataclasses.replace(ALL_OFF, largest_liver_component=True)
    out = postprocess(liver, tumor, cfg)
    assert out[w["second_liver"]] == 0
    assert np.count_nonzero(out[4:8, 38:44, 38:44]) == 0
    assert out[w["real_tumour"]] == 2 and out[10, 20, 20] == 1
    assert postprocess(liver, tumor, ALL_OFF)[w["second_liver"]] == 1


def test_largest_component_counts_tumour_as_liver():
    # two liver halves joined only by tumour voxels form ONE component; a lone liver blob of 300 voxels is
    # bigger than either half (250) but smaller than halves + tumour (600)
    liver, tumor = _probs()
    liver[2:12, 2:7, 2:7] = 0.9
    tumor[2:12, 2:7, 7:9] = 0.9
    liver[2:12, 2:7, 9:14] = 0.9
    liver[14:20, 30:40, 30:35] = 0.9
    cfg = dataclasses.replace(ALL_OFF, largest_liver_component=True)
    out = postprocess(liver, tumor, cfg)
    assert out[5, 4, 4] == 1 and out[5, 4, 8] == 2 and out[5, 4, 12] == 1
    assert np.count_nonzero(out[14:20, 30:40, 30:35]) == 0


def test_tumour_outside_dilated_liver_removed():
    liver, tumor = _probs()
    liver[4:20, 8:32, 8:32] = 0.9
    tumor[8:12, 40:44, 40:44] = 0.9  # isolated blob, far from liver
    tumor[10, 20, 33] = 0.9  # 2 voxels from the liver face (x=31): inside the dilation
    tumor[10, 20, 34] = 0.9  # 3 voxels away: outside
    cfg = dataclasses.replace(ALL_OFF, tumor_in_liver=True, liver_dilation=2)
    out = postprocess(liver, tumor, cfg)
    assert np.count_nonzero(out[8:12, 40:44, 40:44]) == 0
    assert out[10, 20, 33] == 2 and out[10, 20, 34] == 0
    off = postprocess(liver, tumor, ALL_OFF)
    assert np.all(off[8:12, 40:44, 40:44] == 2)
    # dilation 0: only tumour on thresholded liver survives
    out0 = postprocess(liver, tumor, dataclasses.replace(cfg, liver_dilation=0))
    assert out0[10, 20, 33] == 0


def test_dilation_matches_scipy_cube_dilation():
    rng = np.random.default_rng(3)
    liver = (rng.random(SHAPE) < 0.01).astype(np.float32)
    tumor = (rng.random(SHAPE) < 0.3).astype(np.float32)
    for r in (1, 2, 3):
        cfg = dataclasses.replace(ALL_OFF, tumor_in_liver=True, liver_dilation=r)
        out = postprocess(liver, tumor, cfg)
        grown = ndimage.binary_dilation(liver > 0.5, structure=np.ones((3, 3, 3), bool), iterations=r)
        np.testing.assert_array_equal(out == 2, (tumor > 0.5) & grown)


def test_tumour_in_liver_without_any_liver_clears_tumour():
    liver, tumor = _probs()
    tumor[5:10, 5:10, 5:10] = 0.9
    out = postprocess(liver, tumor, dataclasses.replace(ALL_OFF, tumor_in_liver=True))
    assert not out.any()


def test_fill_holes_runs_before_tumor_in_liver():
    # the liver head misses a large tumour (a 10^3 cavity in L) that the tumour head finds: without hole
    # filling the dilation check hollows the tumour out, with it the tumour is kept whole
    liver, tumor = _probs()
    liver[2:22, 10:38, 10:38] = 0.9
    liver[7:17, 19:29, 19:29] = 0.2
    tumor[7:17, 19:29, 19:29] = 0.9
    cfg = dataclasses.replace(ALL_OFF, tumor_in_liver=True, liver_dilation=2)
    hollow = postprocess(liver, tumor, cfg)
    assert hollow[12, 24, 24] == 0 and hollow[7, 19, 19] == 2
    whole = postprocess(liver, tumor, dataclasses.replace(cfg, fill_liver_holes=True))
    assert np.all(whole[7:17, 19:29, 19:29] == 2)


def test_min_tumor_voxels_49_removed_50_kept():
    liver, tumor = _probs()
    liver[2:22, 2:46, 2:46] = 0.9
    tumor[5, 5:12, 5:12] = 0.9  # 49 voxels (7x7 plate)
    tumor[15, 20:30, 20:25] = 0.9  # 50 voxels (10x5 plate)
    cfg = dataclasses.replace(ALL_OFF, min_tumor_voxels=50)
    out = postprocess(liver, tumor, cfg)
    assert np.count_nonzero(out[5] == 2) == 0
    assert np.all(out[5, 5:12, 5:12] == 1)  # dropped tumour inside the liver stays liver
    assert np.count_nonzero(out[15] == 2) == 50
    off = postprocess(liver, tumor, dataclasses.replace(cfg, min_tumor_voxels=0))
    assert np.count_nonzero(off[5] == 2) == 49


def test_min_tumor_voxels_uses_3d_26_connectivity():
    liver, tumor = _probs()
    liver[2:22, 2:46, 2:46] = 0.9
    tumor[10, 10:15, 10:15] = 0.9  # 25 voxels
    tumor[11, 15:20, 15:20] = 0.9  # 25 voxels, touching the first only at the corner (10,14,14)-(11,15,15)
    cfg = dataclasses.replace(ALL_OFF, min_tumor_voxels=50)
    out = postprocess(liver, tumor, cfg)
    assert np.count_nonzero(out == 2) == 50
    out = postprocess(liver, tumor, dataclasses.replace(cfg, min_tumor_voxels=51))
    assert np.count_nonzero(out == 2) == 0


def test_fill_liver_holes():
    liver, tumor, w = _phantom()
    on = postprocess(liver, tumor, dataclasses.replace(ALL_OFF, fill_liver_holes=True))
    off = postprocess(liver, tumor, ALL_OFF)
    assert off[w["hole"]] == 0 and on[w["hole"]] == 1
    assert np.all(on[15:18, 10:13, 22:25] == 1)
    assert on[0, 0, 0] == 0 and on[6, 40, 40] == 1  # outside untouched, other blob untouched


def test_fill_holes_matches_scipy():
    rng = np.random.default_rng(5)
    full = ndimage.binary_closing(rng.random((12, 20, 20)) < 0.55)
    filled = full.copy()
    pp._fill_holes(filled)
    np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(full))


# ---------------------------------------------------------------------------------------- full pipeline


def test_default_pipeline_removes_each_artefact():
    liver, tumor, w = _phantom()
    cfg = PostprocessConfig()
    assert cfg.fill_liver_holes is False
    out = postprocess(liver, tumor, dataclasses.replace(cfg, fill_liver_holes=True))
    assert out.dtype == np.uint8 and out.shape == SHAPE
    assert out[w["second_liver"]] == 0
    assert out[w["far_protrusion"]] == 0
    assert out[16, 22, 32] == 2  # near part of the protrusion (1 voxel out) is kept
    assert out[w["small_tumour"]] == 1  # small tumour dropped, liver remains
    assert out[w["hole"]] == 1
    assert out[w["real_tumour"]] == 2
    # tumour implies liver: every tumour voxel is labelled 2 (>= 1) and lies in the liver component
    assert np.all(ndimage.label(out >= 1, structure=np.ones((3, 3, 3)))[1] == 1)


@pytest.mark.parametrize(
    "switch, off_value, artefact, expected_if_off",
    [
        ("largest_liver_component", False, "second_liver", 1),
        ("tumor_in_liver", False, "far_protrusion", 2),
        ("min_tumor_voxels", 0, "small_tumour", 2),
        ("fill_liver_holes", False, "hole", 0),
    ],
)
def test_each_switch_off_leaves_its_artefact(switch, off_value, artefact, expected_if_off):
    liver, tumor, w = _phantom()
    on = dataclasses.replace(PostprocessConfig(), fill_liver_holes=True)
    off = dataclasses.replace(on, **{switch: off_value})
    assert postprocess(liver, tumor, off)[w[artefact]] == expected_if_off
    assert postprocess(liver, tumor, on)[w[artefact]] != expected_if_off


def test_tumour_implies_liver_label():
    liver, tumor = _probs()
    liver[4:20, 8:32, 8:32] = 0.9
    tumor[10:14, 14:20, 31:33] = 0.95  # straddles the liver face: x=31 on liver, x=32 just outside
    out = postprocess(liver, tumor, PostprocessConfig(min_tumor_voxels=0))
    assert np.all(out[10:14, 14:20, 31:33] == 2)
    liver_mask = out >= 1
    assert np.all(liver_mask[out == 2])


def test_empty_prediction():
    liver, tumor = _probs()
    out = postprocess(liver, tumor, dataclasses.replace(PostprocessConfig(), fill_liver_holes=True))
    assert out.shape == SHAPE and not out.any()


# ------------------------------------------------------------------------------------------------ config


def test_config_from_mapping_and_omegaconf():
    cfg = PostprocessConfig.from_mapping({"min_tumor_voxels": 10, "threshold": 0.4})
    assert cfg == PostprocessConfig(min_tumor_voxels=10, threshold=0.4)
    node = OmegaConf.create({"liver_dilation": 1, "fill_liver_holes": True, "threshold": "${thr}", "thr": 0.3})
    with pytest.raises(LitsError, match="thr"):
        PostprocessConfig.from_mapping(node)  # 'thr' is not a postprocess key
    node = OmegaConf.create({"p": {"liver_dilation": 1, "fill_liver_holes": True, "threshold": "${t}"}, "t": 0.3})
    cfg = PostprocessConfig.from_mapping(node.p)
    assert cfg.liver_dilation == 1 and cfg.fill_liver_holes is True and cfg.threshold == 0.3
    assert PostprocessConfig.from_mapping(None) == PostprocessConfig()
    liver, tumor, _ = _phantom()
    np.testing.assert_array_equal(
        postprocess(liver, tumor, {"min_tumor_voxels": 0}),
        postprocess(liver, tumor, PostprocessConfig(min_tumor_voxels=0)),
    )


def test_unknown_config_key_raises_litserror():
    with pytest.raises(LitsError, match="min_tumour_voxels"):
        PostprocessConfig.from_mapping({"min_tumour_voxels": 50})
    with pytest.raises(LitsError):
        postprocess(*_probs(), {"largest_component": True})


@pytest.mark.parametrize(
    "bad",
    [
        {"threshold": 1.5},
        {"threshold": "high"},
        {"liver_dilation": -1},
        {"min_tumor_voxels": 2.5},
        {"tumor_in_liver": "yes"},
        {"liver_dilation": float("nan")},
        {"threshold": float("nan")},
    ],
)
def test_bad_config_values_raise_litserror(bad):
    with pytest.raises(LitsError, match=next(iter(bad))):
        PostprocessConfig.from_mapping(bad)


def test_fill_holes_background_is_6_connected():
    # cavity chain (3,3,3)-(2,2,2)-(1,1,1) reaches the outside only through corners, which is enclosed
    # for 6-connected background (scipy's binary_fill_holes default): the inner two voxels are holes
    full = np.zeros((7, 7, 7), bool)
    full[1:6, 1:6, 1:6] = True
    for i in (1, 2, 3):
        full[i, i, i] = False
    filled = full.copy()
    pp._fill_holes(filled)
    assert filled[3, 3, 3] and filled[2, 2, 2] and not filled[1, 1, 1]
    np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(full))


def test_largest_component_is_by_size_not_scan_order():
    liver, tumor = _probs()
    liver[0:2, 0:3, 0:3] = 0.9  # small blob first in raster order
    liver[1:3, 40:44, 40:44] = 0.9  # medium blob
    liver[6:20, 10:30, 10:30] = 0.9  # largest, last in raster order
    out = postprocess(liver, tumor, dataclasses.replace(ALL_OFF, largest_liver_component=True))
    assert np.count_nonzero(out) == 14 * 20 * 20 and out[10, 20, 20] == 1


# ------------------------------------------------------------------------------------ hysteresis + ablation


def _hysteresis_map():
    """Hand-built tumour probabilities inside a big liver: what hysteresis (low 0.3, high 0.7) keeps and drops."""
    liver, tumor = _probs()
    liver[2:22, 2:46, 2:46] = 0.9
    tumor[8:12, 10:14, 10:14] = 0.9  # confident core
    tumor[8:12, 10:14, 14:20] = 0.4  # low-confidence tail, face-connected to the core: grown into
    tumor[8:12, 10:14, 20:22] = 0.2  # below low: never tumour
    tumor[8:12, 30:36, 30:36] = 0.6  # above the plain threshold but nowhere confident: dropped
    tumor[16:20, 10:14, 10:14] = 0.4  # low blob touching nothing confident: dropped
    tumor[12, 14, 14] = 0.4  # meets the tail along an edge only (no shared face): not grown into
    return liver, tumor


def test_hysteresis_grows_confident_tumour_and_drops_unconfident_blobs():
    liver, tumor = _hysteresis_map()
    cfg = dataclasses.replace(ALL_OFF, hysteresis=True, hysteresis_low=0.3, hysteresis_high=0.7)
    out = postprocess(liver, tumor, cfg)
    assert np.all(out[8:12, 10:14, 10:20] == 2)  # core + tail
    assert np.all(out[8:12, 10:14, 20:22] == 1)  # below low: liver
    assert np.all(out[8:12, 30:36, 30:36] == 1) and np.all(out[16:20, 10:14, 10:14] == 1)
    assert out[12, 14, 14] == 1
    assert np.count_nonzero(out == 2) == 4 * 4 * 10
    # the plain threshold instead: no tail, but the unconfident 0.6 blob
    plain = postprocess(liver, tumor, ALL_OFF)
    assert np.all(plain[8:12, 10:14, 14:20] == 1) and np.all(plain[8:12, 30:36, 30:36] == 2)
    # exactly skimage's function (it is the reference), computed on the whole volume
    from skimage.filters import apply_hysteresis_threshold

    np.testing.assert_array_equal(out == 2, apply_hysteresis_threshold(tumor, 0.3, 0.7))


def test_hysteresis_with_high_at_threshold_only_grows():
    liver, tumor = _hysteresis_map()
    plain = postprocess(liver, tumor, ALL_OFF) == 2
    grown = postprocess(liver, tumor, dataclasses.replace(ALL_OFF, hysteresis=True)) == 2  # defaults: 0.3 / 0.5
    assert np.all(grown[plain]) and grown.sum() > plain.sum()
    assert np.all(grown[8:12, 10:14, 14:20]) and np.all(grown[8:12, 30:36, 30:36])


def test_hysteresis_on_an_empty_map():
    liver, tumor = _probs()
    assert not postprocess(liver, tumor, dataclasses.replace(ALL_OFF, hysteresis=True)).any()


@pytest.mark.parametrize(
    "bad", [{"hysteresis_low": 0.8, "hysteresis_high": 0.6}, {"hysteresis_high": 1.0}, {"hysteresis": "on"}]
)
def test_bad_hysteresis_settings_raise_litserror(bad):
    with pytest.raises(LitsError, match="hysteresis"):
        PostprocessConfig.from_mapping(bad)


def test_ablation_stages_are_cumulative_and_take_the_configured_parameters():
    cfg = PostprocessConfig(threshold=0.4, liver_dilation=3, min_tumor_voxels=0, hysteresis_low=0.2)
    stages = pp.ablation_stages(cfg)
    assert [name for name, _, _ in stages] == [
        "raw",
        "largest_liver",
        "fill_holes",
        "tumor_in_liver",
        "min_tumor",
        "hysteresis",
    ]
    raw = stages[0][2]
    assert not (raw.largest_liver_component or raw.fill_liver_holes or raw.tumor_in_liver or raw.hysteresis)
    assert raw.min_tumor_voxels == 0
    last = stages[-1][2]
    assert last.largest_liver_component and last.fill_liver_holes and last.tumor_in_liver and last.hysteresis
    assert last.min_tumor_voxels == 50  # off in cfg: the ablation still shows the step, at the default size
    assert {s[2].threshold for s in stages} == {0.4} and last.liver_dilation == 3 and last.hysteresis_low == 0.2
    for (_, _, before), (_, _, after) in zip(stages, stages[1:]):  # exactly one switch changes per step
        changed = [f.name for f in dataclasses.fields(before) if getattr(before, f.name) != getattr(after, f.name)]
        assert len(changed) == 1
    liver, tumor = _hysteresis_map()
    np.testing.assert_array_equal(postprocess(liver, tumor, raw), probabilities_to_labels(liver, tumor, 0.4))
