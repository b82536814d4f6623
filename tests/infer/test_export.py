"""Export: a label map computed on the canonical grid must overlay the input CT voxel for voxel, whatever the
input's orientation, with the input's affine and header (and none of the CT's intensity scaling)."""

import json
import os
import stat

import nibabel as nib
import numpy as np
import pytest

from lits.core.errors import LitsError
from lits.data.nifti import CasePaths, load_case
from lits.infer.export import (
    export_labels,
    export_probabilities,
    orientation_from_meta,
    output_name,
    probability_name,
    read_header,
)


def _oblique():
    angle = np.deg2rad(10)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.array([[0, -0.9, 0], [0, 0, 3.0], [-0.7, 0, 0]])  # permuted, flipped, tilted
    affine[:3, 3] = (12.0, -40.0, 7.5)
    return affine


AFFINES = {
    "flipped_permuted": np.array([[0, 0, -2.5, 10], [0.8, 0, 0, -5], [0, -0.7, 0, 3], [0, 0, 0, 1.0]]),
    "lits_lps": np.diag([-0.8, -0.8, 2.5, 1.0]),
    "oblique": _oblique(),
}


def write_ct(path, affine, shape=(11, 9, 7), seed=0):
    """A CT with random intensities (any misplaced voxel shows), stored int16 with a -1024 rescale intercept."""
    raw = np.random.default_rng(seed).integers(0, 1400, shape).astype(np.int16)
    img = nib.Nifti1Image(raw, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, str(path))
    return raw.astype(np.float64) - 1024.0  # the HU a reader sees, in stored order


def label_rule(hu):
    return ((hu > -600).astype(np.uint8) + (hu > 0)).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_label_map_round_trip_overlays_the_input(tmp_path, name):
    affine = AFFINES[name]
    hu = write_ct(tmp_path / "ct.nii.gz", affine)
    case = load_case(CasePaths("ct", tmp_path / "ct.nii.gz", None))
    if name != "lits_lps":
        assert case.image.shape != hu.shape  # the canonical grid really is a different voxel order
    labels = label_rule(case.image)  # computed where lits computes: on the canonical (Z, Y, X) grid
    # as the preprocessing cache records the orientation (JSON lists)
    meta = json.loads(
        json.dumps(
            {
                "ornt": case.orientation.ornt.tolist(),
                "source_shape": list(case.orientation.source_shape),
                "source_affine": case.orientation.source_affine.tolist(),
            }
        )
    )
    out = export_labels(
        tmp_path / "out" / "test-segmentation-1.nii",
        labels,
        orientation_from_meta(meta),
        read_header(tmp_path / "ct.nii.gz"),
    )
    src, seg = nib.load(tmp_path / "ct.nii.gz"), nib.load(out)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), label_rule(hu))  # voxel for voxel on the stored grid
    assert seg.shape == src.shape and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
    np.testing.assert_allclose(seg.header.get_qform(), src.header.get_qform(), atol=1e-5)
    np.testing.assert_allclose(seg.header.get_sform(), src.header.get_sform(), atol=1e-5)
    assert (int(seg.header["qform_code"]), int(seg.header["sform_code"])) == (1, 1)
    assert nib.aff2axcodes(seg.affine) == nib.aff2axcodes(src.affine)
    assert seg.header.get_zooms() == src.header.get_zooms() and seg.header.get_xyzt_units() == ("mm", "sec")
    assert seg.dataobj.slope == 1.0 and seg.dataobj.inter == 0.0  # the CT's -1024 must not shift the labels
    # and reading it back through lits lands on the canonical grid it was computed on
    back = load_case(CasePaths("ct", tmp_path / "ct.nii.gz", out))
    np.testing.assert_array_equal(back.label, labels)


def test_probability_maps_are_4d_on_the_input_grid(tmp_path):
    affine = AFFINES["flipped_permuted"]
    hu = write_ct(tmp_path / "ct.nii", affine)
    case = load_case(CasePaths("ct", tmp_path / "ct.nii", None))
    unit = lambda h: np.clip((h + 1024) / 1400, 0, 1)  # noqa: E731
    probs = np.stack([unit(case.image), 1 - unit(case.image)]).astype(np.float32)
    out = export_probabilities(
        tmp_path / probability_name("test-segmentation-3.nii"),
        probs,
        case.orientation,
        read_header(tmp_path / "ct.nii"),
    )
    assert out.name == "test-segmentation-3_probabilities.nii.gz"
    img = nib.load(out)
    assert img.shape == (*hu.shape, 2) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    np.testing.assert_allclose(img.get_fdata()[..., 0], unit(hu), atol=1 / 254)
    np.testing.assert_allclose(img.get_fdata()[..., 1], 1 - unit(hu), atol=1 / 254)


def test_export_without_a_header_still_has_the_geometry(tmp_path):
    affine = AFFINES["oblique"]
    hu = write_ct(tmp_path / "ct.nii.gz", affine)
    case = load_case(CasePaths("ct", tmp_path / "ct.nii.gz", None))
    seg = nib.load(export_labels(tmp_path / "seg.nii.gz", label_rule(case.image), case.orientation, header=None))
    np.testing.assert_array_equal(np.asarray(seg.dataobj), label_rule(hu))
    np.testing.assert_allclose(seg.affine, affine, atol=1e-5)


def test_files_are_whole_and_readable(tmp_path):
    write_ct(tmp_path / "ct.nii.gz", AFFINES["lits_lps"])
    case = load_case(CasePaths("ct", tmp_path / "ct.nii.gz", None))
    out = export_labels(tmp_path / "o" / "seg.nii", label_rule(case.image), case.orientation)
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["seg.nii"]  # no temp file left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not the temp file's private 0600


@pytest.mark.parametrize(
    "name, naming, expected",
    [
        ("volume-12.nii", "auto", "test-segmentation-12.nii.gz"),  # compressed by default
        ("test-volume-3.nii.gz", "auto", "test-segmentation-3.nii.gz"),
        ("liver_7.nii.gz", "lits", "test-segmentation-7.nii"),  # the LiTS submission name, exactly
        ("volume-12.nii", "lits", "test-segmentation-12.nii"),
        ("patient_a.nii.gz", "auto", "patient_a.nii.gz"),
        ("patient_b.nii", "auto", "patient_b.nii.gz"),
        ("volume-12.nii", "input", "volume-12.nii.gz"),
    ],
)
def test_output_names(name, naming, expected):
    assert output_name(f"/data/{name}", naming) == expected


def test_output_name_errors():
    with pytest.raises(LitsError, match="patient_a.nii.gz: no case number in the name"):
        output_name("patient_a.nii.gz", "lits")
    with pytest.raises(LitsError, match="naming=lits_style: unknown"):
        output_name("volume-1.nii", "lits_style")
