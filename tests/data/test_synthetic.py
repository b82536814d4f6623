"""Synthetic LiTS-format generator: format, geometry, determinism, realism statistics, I/O."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from lits.core.errors import LitsError
from lits.data import synthetic as syn
from lits.data.synthetic import SyntheticParams, generate_case, generate_dataset, save_montage
from lits.data.synthetic import dataset as syn_dataset
from lits.data.synthetic.anatomy import Phantom
from lits.data.synthetic.montage import pick_slices

SMALL = SyntheticParams(size=96, num_slices=(24, 32))
TINY = SyntheticParams(size=64, num_slices=(16, 20))
REPO = Path(__file__).resolve().parents[2]


def test_case_format_and_geometry():
    vol, seg, aff = generate_case(0, seed=0, params=SMALL)
    assert vol.dtype == np.int16 and seg.dtype == np.uint8 and aff.dtype == np.float64
    assert vol.shape == seg.shape and vol.shape[:2] == (96, 96)
    sz = float(np.diag(aff)[2])
    thin = SMALL.thin_spacing_z[0] <= sz <= SMALL.thin_spacing_z[1]
    assert thin or SMALL.spacing_z[0] <= sz <= SMALL.spacing_z[1]
    # the z extent: num_slices x spacing_z for a body framed at 360/256 mm, scaled with the in-plane spacing drawn
    extent = np.array(SMALL.num_slices) * np.array(SMALL.spacing_z) * -np.diag(aff)[0] / (360 / 256)
    assert extent[0] - sz <= vol.shape[2] * sz <= extent[1] + sz
    assert set(np.unique(seg).tolist()) <= {0, 1, 2} and (seg == 1).any()
    assert vol.min() >= syn.HU_MIN and vol.max() <= syn.HU_MAX
    assert aff.shape == (4, 4)
    sx, sy, sz = np.diag(aff)[:3]
    assert sx < 0 and sy < 0 and sz > 0 and sx == sy  # LiTS/DICOM-like: diag(-s, -s, sz)
    assert SMALL.spacing_xy[0] <= -sx <= SMALL.spacing_xy[1]
    assert np.count_nonzero(aff[:3, :3] - np.diag(np.diag(aff)[:3])) == 0
    assert np.abs(aff[:3, 3]).max() > 10  # a real origin offset, not zero
    assert nib.aff2axcodes(aff) == ("L", "P", "S")
    # air outside the body, soft tissue inside
    assert np.median(vol[:3, :3, :]) < -900
    assert 60 < np.median(vol[seg == 1]) < 160


def test_liver_on_patient_right_and_anterior_up():
    vol, seg, aff = generate_case(1, seed=0, params=SMALL)
    i_liver = np.nonzero(seg >= 1)[0].mean()
    # X voxel axis points to the patient's left, so the (right-sided) liver sits at low i
    assert i_liver < seg.shape[0] / 2
    # world coordinates: liver centroid has positive RAS x (patient right) relative to the FOV centre
    ijk = np.array([*np.argwhere(seg >= 1).mean(axis=0), 1.0])
    centre = np.array([(seg.shape[0] - 1) / 2, (seg.shape[1] - 1) / 2, ijk[2], 1.0])
    assert (aff @ ijk)[0] > (aff @ centre)[0]


def test_tumour_inside_liver_by_construction():
    found = 0
    for idx in range(6):
        rng = np.random.default_rng([0, idx])
        case = Phantom(rng, SMALL)
        vol, seg, _ = case.build()
        assert not (case.tumor & ~case.liver).any()  # tumours were clipped to the liver mask
        assert np.array_equal(seg == 2, case.tumor)  # label 2 is exactly the tumour mask ...
        assert np.array_equal(seg >= 1, case.liver)  # ... and liver + tumour the liver mask
        if (seg == 2).any():
            found += 1
            # black-box: each tumour blob is embedded in liver (touches label-1 voxels)
            lab, n = ndimage.label(seg == 2)
            for k in range(1, n + 1):
                blob = ndimage.binary_dilation(lab == k, iterations=1)
                assert (seg[blob] == 1).any()
            # the liver (with tumours) is one connected organ
            assert ndimage.label(seg >= 1)[1] == 1
    assert found >= 3


def test_determinism():
    a = generate_case(3, seed=5, params=SMALL)
    b = generate_case(3, seed=5, params=SMALL)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    c = generate_case(3, seed=6, params=SMALL)
    assert a[0].shape != c[0].shape or not np.array_equal(a[0], c[0])
    d = generate_case(4, seed=5, params=SMALL)
    assert a[0].shape != d[0].shape or not np.array_equal(a[0], d[0])


@pytest.fixture(scope="module")
def default_cases():
    """20 cases at the default size: a few per-case summaries (arrays are not kept)."""
    out = []
    for idx in range(20):
        vol, seg, _ = generate_case(idx, seed=0)
        liver, tumor = seg == 1, seg == 2
        zl = np.nonzero((seg >= 1).any(axis=(0, 1)))[0]
        out.append(
            dict(
                nz=seg.shape[2],
                tumor_frac=tumor.mean(),
                tumor_slices=int(tumor.any(axis=(0, 1)).sum()),
                liver_z=(int(zl[0]), int(zl[-1]), len(zl)),
                liver_hu=float(vol[liver].mean()),
                tumor_hu=float(vol[tumor].mean()) if tumor.any() else None,
            )
        )
    return out


def test_realism_statistics(default_cases):
    cases = default_cases
    tumour_cases = [c for c in cases if c["tumor_frac"] > 0]
    n_free = len(cases) - len(tumour_cases)
    assert 1 <= n_free <= len(cases) // 2  # some, not most, cases are tumour-free
    free_slices = 1 - sum(c["tumor_slices"] for c in cases) / sum(c["nz"] for c in cases)
    assert free_slices > 0.5  # most slices carry no tumour
    mean_frac = float(np.mean([c["tumor_frac"] for c in tumour_cases]))
    assert 0.005 <= mean_frac <= 0.03, mean_frac
    # tumours are mostly hypodense: on average and in most cases (some lesions are iso- or hyperdense, as in LiTS)
    diffs = [c["liver_hu"] - c["tumor_hu"] for c in tumour_cases]
    assert np.mean(np.array(diffs) > 0) >= 0.7 and np.mean(diffs) > 15, diffs


def test_liver_leaves_liver_free_slices(default_cases):
    for c in default_cases:
        lo, hi, count = c["liver_z"]
        assert lo >= 1 and hi <= c["nz"] - 2  # liver-free slices at both ends
        assert count == hi - lo + 1  # contiguous
        assert count >= c["nz"] // 3


def test_generate_dataset_roundtrip_and_refusal(tmp_path):
    root = tmp_path / "synth"
    out = generate_dataset(root, 2, seed=3, params=TINY, progress=False)
    assert out == root
    names = sorted(p.name for p in root.iterdir())
    assert names == [
        "segmentation-0.nii.gz",
        "segmentation-1.nii.gz",
        "synthetic.json",
        "volume-0.nii.gz",
        "volume-1.nii.gz",
    ]
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 3
    for i in range(2):
        vol, seg, aff = generate_case(i, seed=3, params=TINY)  # alone == inside the data set
        vimg = nib.load(str(root / f"volume-{i}.nii.gz"))
        simg = nib.load(str(root / f"segmentation-{i}.nii.gz"))
        v, s = np.asarray(vimg.dataobj), np.asarray(simg.dataobj)
        assert v.dtype == np.int16 and s.dtype == np.uint8
        assert np.array_equal(v, vol) and np.array_equal(s, seg)
        for img in (vimg, simg):
            assert np.allclose(img.affine, aff)
            assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
            assert img.header.get_xyzt_units()[0] == "mm"
            assert np.allclose(img.header.get_zooms(), np.abs(np.diag(aff)[:3]))
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]  # no temporary sibling left
    with pytest.raises(LitsError, match="synth"):
        generate_dataset(root, 1, params=TINY, progress=False)
    # an existing empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_dataset(empty, 1, params=TINY, progress=False)
    assert (empty / "volume-0.nii.gz").is_file()


def test_generate_dataset_is_atomic(tmp_path, monkeypatch):
    real = syn.generate_case

    def flaky(index, seed=0, params=None):
        if index == 1:
            raise KeyboardInterrupt
        return real(index, seed, SyntheticParams() if params is None else params)

    monkeypatch.setattr(syn_dataset, "generate_case", flaky)  # where generate_dataset looks it up
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(tmp_path / "synth", 3, params=TINY, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_params_raise_lits_error():
    with pytest.raises(LitsError, match="num_slices"):
        SyntheticParams(num_slices=(40, 30))
    with pytest.raises(LitsError, match="size"):
        SyntheticParams(size=8)
    assert SyntheticParams(num_slices=[20, 24]).num_slices == (20, 24)  # lists from Hydra


def test_save_montage(tmp_path):
    vol, seg, aff = generate_case(0, seed=0, params=SMALL)
    path = save_montage(vol, seg, tmp_path / "m" / "montage.png", num_slices=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["montage.png"]
    # slice choice: tumour slices and at least one tumour-free liver slice
    ks = pick_slices(seg, 6)
    tum = (seg == 2).any(axis=(0, 1))
    liv = (seg >= 1).any(axis=(0, 1))
    if tum.any():
        assert any(tum[k] for k in ks)
    assert any(liv[k] and not tum[k] for k in ks)
    # a RAS-reoriented copy with its affine gives the same picture input
    ras = nib.as_closest_canonical(nib.Nifti1Image(vol, aff))
    save_montage(
        np.asarray(ras.dataobj),
        np.asarray(nib.as_closest_canonical(nib.Nifti1Image(seg, aff)).dataobj),
        tmp_path / "ras.png",
        affine=ras.affine,
    )
    assert (tmp_path / "ras.png").stat().st_size > 1000


def test_cli(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_synthetic", REPO / "scripts" / "make_synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "d"
    rc = mod.main(
        [
            "--out",
            str(out),
            "--num-cases",
            "1",
            "--seed",
            "1",
            "--size",
            "64",
            "--min-slices",
            "16",
            "--max-slices",
            "16",
            "--quiet",
            "--montage",
            str(tmp_path / "m.png"),
        ]
    )
    assert rc == 0 and (out / "segmentation-0.nii.gz").is_file() and (tmp_path / "m.png").is_file()
    assert str(out.resolve()) in capsys.readouterr().out
    assert mod.main(["--out", str(out), "--num-cases", "1", "--quiet"]) == 2  # refuses a non-empty target
    assert "delete it" in capsys.readouterr().err
