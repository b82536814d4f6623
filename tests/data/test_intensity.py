"""Mis-scaled CTs and empty label sets do not pass silently: real NIfTI files stored the wrong way (HU + 1024 as uint16
without a rescale intercept, HU wrapped through a signed/unsigned mix-up) are refused in one line naming the file and
the likely cause, or left out with data.on_error=skip; doubtful intensities are warned about; a training set without
liver or tumour is refused, a validation set without tumour warned about. Real CTs, the synthetic data and the tests'
soft-tissue phantoms pass."""

import json
import logging

import nibabel as nib
import numpy as np
import pytest
from conftest import LPS, data_cfg, make_case, make_lits_tree, write_nifti

from lits.core.config.synthetic import SyntheticParams
from lits.core.errors import LitsError
from lits.data.intensity import IntensityCheck
from lits.data.prepare import SKIPPED_FILE, cache_folder, prepare
from lits.data.synthetic import generate_case

SMALL = SyntheticParams(size=64, num_slices=(16, 18))


def synthetic_ct(index):
    """A realistic CT (air around the body, lung bases, bone) in int16 HU, its labels and affine (X, Y, Z)."""
    return generate_case(index, seed=0, params=SMALL)


def offset_uint16(hu):
    """HU + 1024 stored as uint16 with no scl_inter: what some exports write when the intercept is dropped."""
    return (hu.astype(np.int32) + 1024).astype(np.uint16)


def wrapped_int16(hu):
    """HU + 32768 stored as uint16, then read as int16: tissue wraps round to about -32768, air to about +31744."""
    return (hu.astype(np.int32) + 32768).astype(np.uint16).view(np.int16)


def ct_tree(root, corrupt: dict):
    """Four synthetic cases in LiTS layout; corrupt = {case: function applied to its HU before writing}."""
    root.mkdir(parents=True)
    for i in range(4):
        vol, seg, affine = synthetic_ct(i)
        data = corrupt[i](vol) if i in corrupt else vol
        img = nib.Nifti1Image(data, affine)
        img.header.set_slope_inter(1.0, 0.0)  # written as stored: no rescaling to undo the corruption
        nib.save(img, str(root / f"volume-{i}.nii.gz"))
        write_nifti(root / f"segmentation-{i}.nii.gz", seg, affine)
    return root


def test_real_ct_synthetic_and_phantoms_pass_without_warning():
    for vol in [synthetic_ct(i)[0] for i in range(3)] + [make_case(seed=s)[0] for s in range(3)]:
        check = IntensityCheck()
        check.add(vol.astype(np.float32))
        assert check.verdict("ct.nii") == (None, None)
    body_only = synthetic_ct(0)[0][16:48, 16:48].astype(np.float32)  # field of view cropped to the body
    check = IntensityCheck()
    check.add(body_only)
    assert check.verdict("ct.nii")[0] is None


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (offset_uint16, r"volume-2.nii.gz: looks like HU \+ 1024 stored without its rescale intercept .* set "
                        r"scl_inter=-1024 in the header or re-export the CT in HU"),
        (wrapped_int16, r"volume-2.nii.gz: not Hounsfield units \(100% of the voxels outside \[-3100, 5000\] HU.*"
                        r"unsigned/signed mix-up"),
    ],
    ids=["uint16-hu+1024", "wrapped-int16"],
)  # fmt: skip
def test_mis_scaled_ct_is_refused_in_one_line_or_skipped(tmp_path, corrupt, message):
    root = ct_tree(tmp_path / "LiTS", {2: corrupt})
    assert nib.load(root / "volume-2.nii.gz").dataobj.slope in (1.0, None)  # a real file, stored that way
    cfg = data_cfg(root, tmp_path / "cache", split={"val": [1], "test": [3]})
    with pytest.raises(LitsError, match=message) as err:
        prepare(cfg, seed=0, progress=False)
    assert "\n" not in str(err.value) and "data.on_error=skip" in str(err.value)
    assert not (cache_folder(cfg) / "2").exists()  # nothing of it cached

    skip = data_cfg(root, tmp_path / "cache", on_error="skip", split={"val": [1], "test": [3]})
    splits, cases = prepare(skip, seed=0, progress=False, report_dir=tmp_path / "run")
    assert splits["train"] == ["0"] and [c.case_id for c in cases["val"]] == ["1"]
    [record] = json.loads((tmp_path / "run" / SKIPPED_FILE).read_text())
    assert record["case"] == "2" and record["path"].endswith("volume-2.nii.gz")


def test_doubtful_intensities_are_warned_once_per_use_and_kept_in_meta(tmp_path, caplog):
    root = make_lits_tree(tmp_path / "LiTS", n=3)
    vol, seg = make_case(seed=0)
    vol = vol + 400  # soft tissue at 350..520 HU ...
    vol[:, :2, :] = -900  # ... beside some air: neither rule for a clear error applies
    write_nifti(root / "Training Batch 1" / "volume-0.nii", vol, LPS)
    cfg = data_cfg(root, tmp_path / "cache", split={"val": [1], "test": [2]})
    with caplog.at_level(logging.WARNING, logger="lits"):
        prepare(cfg, seed=0, progress=False)
    warned = [r.getMessage() for r in caplog.records if "brighter than soft tissue" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("case 0: ") and "volume-0.nii: " in warned[0]
    assert "brighter than soft tissue" in json.loads((cache_folder(cfg) / "0" / "meta.json").read_text())["warning"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lits"):
        prepare(cfg, seed=0, progress=False)  # from the cache: warned again
    assert any("brighter than soft tissue" in r.getMessage() for r in caplog.records)


def relabel(root, cases, value_map):
    """Rewrite the segmentations of `cases` with labels mapped through value_map (e.g. {1: 0, 2: 0}: empty)."""
    for i in cases:
        path = next(root.rglob(f"segmentation-{i}.nii*"))
        seg = np.asarray(nib.load(path).dataobj).astype(np.uint8)
        out = seg.copy()
        for old, new in value_map.items():
            out[seg == old] = new
        write_nifti(path, out, nib.load(path).affine)


@pytest.mark.parametrize(
    ("value_map", "message"),
    [({1: 0, 2: 0}, "has a liver voxel"), ({2: 1}, "has a tumour voxel")],
    ids=["all-zero", "no-tumour"],
)
def test_training_set_without_liver_or_tumour_is_refused(tmp_path, value_map, message):
    root = make_lits_tree(tmp_path / "LiTS", n=4)
    relabel(root, range(4), value_map)
    cfg = data_cfg(root, tmp_path / "cache", split={"val": [1], "test": [2]})
    with pytest.raises(LitsError, match=f"none of the 2 training cases {message} .*check them"):
        prepare(cfg, seed=0, progress=False, only=("train", "val"))
    prepare(cfg, seed=0, progress=False, only=("test",))  # scoring such cases stays possible


def test_validation_without_tumour_is_warned(tmp_path, caplog):
    root = make_lits_tree(tmp_path / "LiTS", n=4)  # case 1 has no tumour
    cfg = data_cfg(root, tmp_path / "cache", split={"val": [1], "test": [2]})
    with caplog.at_level(logging.WARNING, logger="lits"):
        prepare(cfg, seed=0, progress=False, only=("train", "val"))
    assert any("none of the 1 validation cases has a tumour voxel" in r.getMessage() for r in caplog.records)
