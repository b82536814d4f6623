"""Lesion-oversampling sampler and ROI crops."""

import numpy as np
import pytest

from lits.data.cache import build_cache
from lits.data.nifti import find_lits_pairs
from lits.data.slices import LesionSampler, SamplingConfig, SliceIndex, TrainSlices, crop_origin


@pytest.fixture
def index(lits_tree, tmp_path):
    return SliceIndex(build_cache(find_lits_pairs(lits_tree), tmp_path / "cache", (-200, 250), lits_tree, progress=False))


def test_weights_follow_config(index):
    cfg = SamplingConfig(lesion_factor=4, liver_weight=1, background_weight=0.1)
    w = index.weights(cfg)
    tumor, liver_only, background = index.tumor > 0, (index.liver > 0) & (index.tumor == 0), index.liver == 0
    assert tumor.any() and liver_only.any() and background.any()
    assert np.allclose(w[tumor] / w[liver_only][0], 4) and np.allclose(w[background] / w[liver_only][0], 0.1)
    assert w.sum() == pytest.approx(1)


def test_empirical_lesion_fraction_matches_weights(index):
    cfg = SamplingConfig(lesion_factor=4, samples_per_epoch=20000)
    w = index.weights(cfg)
    expected = w[index.tumor > 0].sum()
    draws = np.array([i for i, _ in LesionSampler(w, cfg.samples_per_epoch, seed=1)])
    observed = (index.tumor[draws] > 0).mean()
    assert abs(observed - expected) < 0.015  # ~4 standard errors at n=20000
    unweighted = (index.tumor > 0).mean()
    assert observed > 1.5 * unweighted  # oversampling really happens


def test_sampler_epochs_ranks_and_determinism(index):
    w = index.weights(SamplingConfig())
    a = list(LesionSampler(w, 64, seed=3))
    assert a == list(LesionSampler(w, 64, seed=3))
    s = LesionSampler(w, 64, seed=3)
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in a]
    ranks = [list(LesionSampler(w, 64, seed=3, rank=r, world_size=2)) for r in range(2)]
    draw_ids = [{d for _, d in r} for r in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 32 and not draw_ids[0] & draw_ids[1]
    assert sorted(ranks[0] + ranks[1], key=lambda t: t[1]) == a  # together they are the single-process draw


def test_lesion_centred_crops_contain_tumour(index):
    ds = TrainSlices(index, crop_size=16, sampling=SamplingConfig(p_lesion_center=1.0), seed=0)
    tumor_slices = np.flatnonzero(index.tumor > 0)
    for draw, s in enumerate(tumor_slices):
        item = ds[(int(s), draw)]
        assert item["image"].shape == (1, 16, 16) and item["label"].shape == (16, 16)
        assert (item["label"] == 2).any()


def test_liver_crops_touch_liver_and_small_slices_are_padded(index):
    ds = TrainSlices(index, crop_size=64, sampling=SamplingConfig(p_lesion_center=0.0), seed=0)
    liver_slices = np.flatnonzero(index.liver > 0)
    for draw, s in enumerate(liver_slices):
        item = ds[(int(s), draw)]
        assert item["image"].shape == (1, 64, 64)  # slices are 36 x 40: padded
        assert (item["label"] >= 1).any()
    assert ds[(int(liver_slices[0]), 5)]["image"].numpy().tolist() == ds[(int(liver_slices[0]), 5)]["image"].numpy().tolist()


def test_crop_origin_stays_inside():
    assert crop_origin(64, 512, 10) == 0
    assert crop_origin(64, 512, 500) == 448
    assert crop_origin(64, 512, 200) == 168
    assert crop_origin(64, 40, 20) == 0
