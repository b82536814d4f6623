"""NIfTI discovery, validation errors, canonical orientation, and the preprocessing cache."""

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS, build_cache, find_lits_pairs, make_case, truncate, write_huge_header, write_nifti

from lits.core.errors import LitsError
from lits.data.cache import cache_key
from lits.data.nifti import load_case, to_canonical
from lits.data.preprocess import slice_stats, window_to_unit


def test_find_pairs_sorted_by_case_number(lits_tree):
    (lits_tree / "sub").mkdir()
    vol, seg = make_case()
    write_nifti(lits_tree / "sub" / "volume-10.nii", vol, np.eye(4))
    write_nifti(lits_tree / "sub" / "segmentation-10.nii", seg, np.eye(4))
    assert [c.case_id for c in find_lits_pairs(lits_tree)] == ["0", "1", "2", "10"]


def test_missing_root_and_missing_label(tmp_path, lits_tree):
    with pytest.raises(LitsError, match="data folder not found"):
        find_lits_pairs(tmp_path / "nope")
    (lits_tree / "segmentation-2.nii.gz").unlink()
    with pytest.raises(LitsError, match="volume-2.nii.gz: no segmentation-2"):
        find_lits_pairs(lits_tree)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("shape", "shapes"),
        ("affine", "affines differ"),
        ("labels", r"label values \[3\]"),
        ("nan", "NaN or infinite"),
        ("truncated", "cannot read NIfTI"),
        ("4d", "expected a 3D CT volume"),
        ("huge", r"header claims 3000 x 3000 x 3000 voxels \(54 GB\), more than the 1,000,000,000 lits reads"),
    ],
)
def test_validation_errors_name_the_file(tmp_path, problem, message):
    vol, seg = make_case()
    affine = LPS
    vol_path, seg_path = tmp_path / "volume-0.nii.gz", tmp_path / "segmentation-0.nii.gz"
    seg_affine = affine.copy()
    vol_data = vol
    if problem == "shape":
        seg = seg[:-1]
    if problem == "affine":
        seg_affine[0, 3] = 5.0
    if problem == "labels":
        seg[0, 0, 0] = 3
    if problem == "nan":
        vol_data = vol.astype(np.float32)
        vol_data[1, 1, 1] = np.nan
    if problem == "4d":
        vol_data = np.stack([vol, vol], axis=-1)
    write_nifti(vol_path, vol_data, affine)
    write_nifti(seg_path, seg, seg_affine)
    if problem == "truncated":
        truncate(vol_path)
    if problem == "huge":
        write_huge_header(vol_path)
    from lits.data.nifti import CasePaths

    with pytest.raises(LitsError, match=message) as err:
        load_case(CasePaths("0", vol_path, seg_path))
    assert "\n" not in str(err.value) and "nii.gz" in str(err.value)


def test_canonical_orientation_matches_world_coordinates():
    """A voxel's world position is the same before and after reorientation, for flipped and permuted axes."""
    rng = np.random.default_rng(0)
    data = rng.random((5, 6, 7))
    affine = np.array([[0, 0, -2.0, 10], [0.8, 0, 0, -3], [0, -0.7, 0, 4], [0, 0, 0, 1]])
    zyx, ornt = to_canonical(data, affine)
    canonical_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    assert np.all(np.diag(canonical_affine)[:3] > 0)  # RAS+: every axis increasing
    i, j, k = 1, 4, 2
    world = affine @ [i, j, k, 1]
    x, y, z = np.round(np.linalg.inv(canonical_affine) @ world)[:3].astype(int)
    assert zyx[z, y, x] == data[i, j, k]


def test_load_case_spacing_and_labels(lits_tree):
    case = load_case(find_lits_pairs(lits_tree)[0])
    assert case.image.shape == (12, 36, 40)  # (Z, Y, X)
    assert case.spacing == pytest.approx((2.5, 0.8, 0.8))
    assert set(np.unique(case.label)) == {0, 1, 2}
    assert np.array_equal(
        case.orientation.to_source(case.label), np.asarray(nib.load(lits_tree / "segmentation-0.nii.gz").dataobj)
    )


def test_window_to_unit():
    out = window_to_unit(np.array([-1000, -200, 25, 250, 3000.0]), (-200, 250))
    assert np.allclose(out, [0, 0, 0.5, 1, 1])
    with pytest.raises(LitsError, match="data.window"):
        window_to_unit(np.zeros(3), (250, -200))


def test_slice_stats_counts_and_boxes():
    label = np.zeros((3, 10, 12), np.uint8)
    label[1, 2:5, 3:9] = 1
    label[1, 3, 4] = 2
    stats = slice_stats(label)
    assert stats["liver_voxels"].tolist() == [0, 18, 0]
    assert stats["tumor_voxels"].tolist() == [0, 1, 0]
    assert stats["liver_box"][1].tolist() == [2, 5, 3, 9]
    assert stats["liver_box"][0].tolist() == [-1, -1, -1, -1]


def test_cache_equals_windowed_source_and_is_reused(lits_tree, tmp_path):
    pairs = find_lits_pairs(lits_tree)
    cache = tmp_path / "cache"
    cases = build_cache(pairs, cache, (-200, 250), lits_tree, progress=False)
    folder = cache / cache_key((-200, 250), lits_tree)
    for pair, cached in zip(pairs, cases):
        source = load_case(pair)
        assert isinstance(cached.image, np.memmap) and cached.image.dtype == np.float16
        assert np.allclose(cached.image, window_to_unit(source.image, (-200, 250)), atol=1e-3)
        assert np.array_equal(cached.label, source.label)
        assert cached.spacing == pytest.approx(source.spacing)
    stamp = (folder / "0" / "meta.json").stat().st_mtime_ns
    build_cache(pairs, cache, (-200, 250), lits_tree, progress=False)
    assert (folder / "0" / "meta.json").stat().st_mtime_ns == stamp  # reused, not rewritten
    build_cache(pairs, cache, (-100, 200), lits_tree, progress=False)
    assert len(list(cache.iterdir())) == 2  # a new window is a new cache
    # a changed source file is re-preprocessed
    vol, seg = make_case(seed=9)
    write_nifti(lits_tree / "volume-0.nii.gz", vol, LPS)
    rebuilt = build_cache(pairs[:1], cache, (-200, 250), lits_tree, progress=False)[0]
    assert np.allclose(rebuilt.image, window_to_unit(load_case(pairs[0]).image, (-200, 250)), atol=1e-3)


def test_failed_case_leaves_nothing_half_written(lits_tree, tmp_path):
    bad = lits_tree / "segmentation-1.nii.gz"
    vol, seg = make_case()
    seg[0, 0, 0] = 7
    write_nifti(bad, seg, LPS)
    with pytest.raises(LitsError, match="segmentation-1"):
        build_cache(find_lits_pairs(lits_tree), tmp_path / "cache", (-200, 250), lits_tree, progress=False)
    folder = tmp_path / "cache" / cache_key((-200, 250), lits_tree)
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == [
        "0"
    ]  # case 0 complete, no temp folder left
    assert json.loads((folder / "0" / "meta.json").read_text())["case_id"] == "0"
