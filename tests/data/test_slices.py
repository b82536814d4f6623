"""Lesion-oversampling sampler and ROI crops."""

import pickle

import numpy as np
import pytest
import torch
from conftest import build_cache, find_lits_pairs

from lits.core.errors import LitsError
from lits.data.context import context_batch, input_channels
from lits.data.sampling import (
    LesionSampler,
    SamplingConfig,
    SliceIndex,
    TrainSlices,
    _NpyRows,
    crop_origin,
    tumour_centre_candidates,
)


@pytest.fixture
def index(lits_tree, tmp_path):
    return SliceIndex(
        build_cache(find_lits_pairs(lits_tree), tmp_path / "cache", (-200, 250), lits_tree, progress=False)
    )


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


@pytest.mark.parametrize("lesion_center", ["voxel", "lesion"])
def test_lesion_centred_crops_contain_tumour(index, lesion_center):
    sampling = SamplingConfig(p_lesion_center=1.0, lesion_center=lesion_center)
    ds = TrainSlices(index, crop_size=16, sampling=sampling, seed=0)
    tumor_slices = np.flatnonzero(index.tumor > 0)
    for draw, s in enumerate(tumor_slices):
        item = ds[(int(s), draw)]
        assert item["image"].shape == (1, 16, 16) and item["label"].shape == (16, 16)
        assert (item["label"] == 2).any()
        box = index.tumor_box[s]
        full = index.cases[index.case[s]].label[index.z[s]] == 2
        assert full.sum() == full[box[0] : box[1], box[2] : box[3]].sum()  # the box holds every tumour voxel
    index.tumor_box = None  # caches without tumour boxes: the whole label slice is read, same distribution
    for draw, s in enumerate(tumor_slices):
        assert (ds[(int(s), draw)]["label"] == 2).any()


def test_lesion_centring_draws_lesions_not_voxels():
    """A 30x30 mass and a 2x2 lesion in one slice: by voxel the small lesion is the centre 4 times in 904, by
    lesion half the time."""
    tumour = np.zeros((64, 64), dtype=bool)
    tumour[5:35, 5:35] = True
    tumour[50:52, 50:52] = True
    rng = np.random.default_rng(0)

    def small_share(rule: str, draws: int = 4000) -> float:
        hits = 0
        for _ in range(draws):
            ys, xs = tumour_centre_candidates(tumour, rule, rng)
            pick = rng.integers(len(ys))
            assert tumour[ys[pick], xs[pick]]
            hits += ys[pick] >= 50
        return hits / draws

    assert small_share("voxel") < 0.015  # 4 / 904 = 0.0044
    assert abs(small_share("lesion") - 0.5) < 0.04  # ~5 standard errors at n=4000
    ys, xs = tumour_centre_candidates(tumour, "voxel", rng)
    assert len(ys) == 904  # every tumour voxel, as the default always drew


def test_lesion_center_is_checked():
    with pytest.raises(LitsError, match=r"data.sampling.lesion_center=blob: unknown tumour-centred crop rule"):
        SamplingConfig(lesion_center="blob")


def test_liver_crops_touch_liver_and_small_slices_are_padded(index):
    ds = TrainSlices(index, crop_size=64, sampling=SamplingConfig(p_lesion_center=0.0), seed=0)
    liver_slices = np.flatnonzero(index.liver > 0)
    for draw, s in enumerate(liver_slices):
        item = ds[(int(s), draw)]
        assert item["image"].shape == (1, 64, 64)  # slices are 36 x 40: padded
        assert (item["label"] >= 1).any()
    assert (
        ds[(int(liver_slices[0]), 5)]["image"].numpy().tolist()
        == ds[(int(liver_slices[0]), 5)]["image"].numpy().tolist()
    )


def test_crop_origin_stays_inside():
    assert crop_origin(64, 512, 10) == 0
    assert crop_origin(64, 512, 500) == 448
    assert crop_origin(64, 512, 200) == 168
    assert crop_origin(64, 40, 20) == 0


def test_context_slices_are_neighbours_clamped_at_the_edges(index):
    k = 2
    ds = TrainSlices(index, crop_size=64, sampling=SamplingConfig(p_lesion_center=0.0), seed=0, context_slices=k)
    plain = TrainSlices(index, crop_size=64, sampling=SamplingConfig(p_lesion_center=0.0), seed=0)
    case = index.cases[0]
    z_count = case.image.shape[0]
    for s in (0, 1, 5, z_count - 1):  # first slices, middle, last slice of case 0
        item, single = ds[(s, 7)], plain[(s, 7)]
        assert item["image"].shape == (2 * k + 1, 64, 64) and item["image"].dtype == torch.float16
        assert torch.equal(item["image"][k], single["image"][0]) and torch.equal(item["label"], single["label"])
        for c in range(2 * k + 1):
            z = min(max(s - k + c, 0), z_count - 1)
            # the crop covers the whole 36 x 40 slice (padded), so each channel is slice z
            assert np.array_equal(item["image"][c, :36, :40].numpy(), np.asarray(case.image[z]))
    assert context_batch(case.image, 0, z_count, k).shape == (z_count, 2 * k + 1, 36, 40)
    batch = context_batch(case.image, 3, 6, k)
    assert np.array_equal(batch[0, 0], np.asarray(case.image[1], np.float32))
    assert np.array_equal(context_batch(case.image, 0, 2, 0)[:, 0], np.asarray(case.image[:2], np.float32))
    assert input_channels({"context_slices": 2}) == 5 and input_channels({}) == 1


def test_positional_reads_equal_memory_map_reads(index):
    case = index.cases[1]
    rows = _NpyRows(case.image)
    assert rows.path is not None  # the fast path is in use
    for z, y0, y1 in ((0, 0, 36), (3, 10, 20), (11, 30, 60)):
        assert np.array_equal(rows.read(z, y0, y1), np.asarray(case.image[z, y0 : min(y1, 36)]))
    in_memory = _NpyRows(np.asarray(case.label))
    assert in_memory.path is None and np.array_equal(in_memory.read(4, 5, 9), case.label[4, 5:9])


def test_dataset_pickles_without_the_arrays(index):
    ds = TrainSlices(index, crop_size=32, sampling=SamplingConfig(), seed=0, context_slices=1)
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # file names and the slice table, not the volumes (spawn-started loader workers)
    copy = pickle.loads(blob)
    for draw in range(10):
        a, b = ds[(draw * 3, draw)], copy[(draw * 3, draw)]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_slice_index_uses_the_training_z_range(index):
    cases = index.cases
    cases[0].meta["train_z_range"] = [2, 10]
    restricted = SliceIndex(cases)
    assert len(restricted) == len(index) - 4
    assert restricted.z[restricted.case == 0].tolist() == list(range(2, 10))
    del cases[0].meta["train_z_range"]


@pytest.mark.parametrize("context, size", [(0, 16), (0, 64), (1, 32)])  # 64: larger than the 36 x 40 slices, padded
def test_a_batch_read_in_one_go_is_bit_identical_to_the_single_crops(index, context, size):
    ds = TrainSlices(index, size, SamplingConfig(p_lesion_center=0.5), seed=2, context_slices=context)
    draws = list(LesionSampler(index.weights(SamplingConfig()), 48, seed=5))
    batch = ds[draws]
    assert batch["image"].shape == (48, 2 * context + 1, size, size) and batch["image"].dtype == torch.float16
    assert batch["label"].shape == (48, size, size) and (batch["label"] == 2).any()
    for i, draw in enumerate(draws):
        single = ds[draw]
        assert torch.equal(batch["image"][i], single["image"]) and torch.equal(batch["label"][i], single["label"])


def test_training_loader_hands_out_batches_of_the_sampler_draws(index):
    from conftest import compose_train

    from lits.core.config import TrainConfig, typed
    from lits.train.loader import build_loader

    cfg = typed(TrainConfig, compose_train("debug=smoke", "data.num_workers=2", "data.crop_size=32"))
    weights = index.weights(cfg.data.sampling)
    loader, sampler, _, steps = build_loader(cfg, index, weights, 0, 1, torch.device("cpu"))
    assert steps == 32 // 4 and loader.pin_memory is False and loader.prefetch_factor == 4
    sampler.set_epoch(1, skip=8)  # resumed after two batches of epoch 1
    reference = LesionSampler(weights, 32, seed=cfg.seed)
    reference.set_epoch(1)
    draws = list(reference)[8:]
    batches = list(loader)  # read by two worker processes
    assert len(batches) == 6
    ds = TrainSlices(index, 32, cfg.data.sampling, seed=cfg.seed)
    for b, batch in enumerate(batches):
        expected = ds[draws[4 * b : 4 * b + 4]]
        assert torch.equal(batch["image"], expected["image"]) and torch.equal(batch["label"], expected["label"])


def _two_lesion_case(tmp_path):
    """A cached case (as prepare writes it) with a 20-slice mass and a 2-slice lesion, in a 40-slice volume."""
    from lits.data.cache import CachedCase
    from lits.data.preprocess import slice_stats

    label = np.zeros((40, 32, 32), dtype=np.uint8)
    label[5:35, 4:28, 4:28] = 1
    label[8:28, 6:20, 6:20] = 2  # the mass: slices 8..27
    label[30:32, 24:26, 24:26] = 2  # the small lesion: slices 30, 31
    np.save(tmp_path / "label.npy", label)
    np.save(tmp_path / "image.npy", np.zeros(label.shape, dtype=np.float16))
    image, lab = (np.load(tmp_path / f"{n}.npy", mmap_mode="r") for n in ("image", "label"))
    return CachedCase("0", tmp_path, image, lab, slice_stats(label), {"train_z_range": [2, 38]})


def test_per_lesion_sampling_draws_every_lesion_equally(tmp_path):
    """Slice weights give the mass 20 of 22 tumour draws; per lesion, each lesion gets half of them, spread evenly
    over its slices; the tumour share of all draws stays the same."""
    index = SliceIndex([_two_lesion_case(tmp_path)])
    by_slice, by_lesion = (index.weights(SamplingConfig(per_lesion=flag)) for flag in (False, True))
    tumour = index.tumor > 0
    small = np.isin(index.z, [30, 31])
    assert by_lesion[tumour].sum() == pytest.approx(by_slice[tumour].sum())
    assert by_slice[small].sum() / by_slice[tumour].sum() == pytest.approx(2 / 22)
    assert by_lesion[small].sum() / by_lesion[tumour].sum() == pytest.approx(0.5)
    assert np.allclose(by_lesion[small], by_lesion[small][0]) and np.allclose(by_lesion[tumour & ~small], by_lesion[8])
    draws = np.array([i for i, _ in LesionSampler(by_lesion, 20000, seed=2)])
    hits = small[draws].sum() / tumour[draws].sum()
    assert abs(hits - 0.5) < 0.02  # ~4 standard errors


def test_per_lesion_sampling_counts_lesions_in_3d_and_only_training_slices(tmp_path):
    case = _two_lesion_case(tmp_path)
    case.meta["train_z_range"] = [2, 31]  # cuts the small lesion to slice 30 alone
    share = SliceIndex([case]).lesion_weights()
    index = SliceIndex([case])
    assert share.sum() == pytest.approx(1.0)
    assert share[index.z == 30].item() == pytest.approx(0.5)  # still one lesion of two, on its one slice
    assert share[index.z == 10].item() == pytest.approx(0.5 / 20)
