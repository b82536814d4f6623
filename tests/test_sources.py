"""Case discovery in the three layouts (LiTS folders, MSD Task03_Liver, CSV lists) and the problems it reports.

The tree builders here are shared with test_data_prepare.py.
"""

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import make_case, write_nifti
from omegaconf import OmegaConf

from lits.core.errors import LitsError
from lits.data.sources import discover, find_lits, find_msd, id_from_filename, read_pairs_csv

LPS = np.diag([-0.8, -0.8, 2.5, 1.0])  # the usual LiTS / DICOM voxel axes
# a non-canonical affine: voxel axes permuted and flipped (i -> -S, j -> +R, k -> -A), with an offset
ODD = np.array([[0, 0.75, 0, -20], [0, 0, -0.9, 30], [-3.0, 0, 0, 40], [0, 0, 0, 1]])


def odd_case(seed=0, tumor=True):
    """make_case data re-laid out for the ODD affine (same anatomy, different voxel order)."""
    vol, seg = make_case(seed=seed, tumor=tumor)  # (X, Y, Z)
    return np.ascontiguousarray(np.transpose(vol, (2, 0, 1))), np.ascontiguousarray(np.transpose(seg, (2, 0, 1)))


def truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def write_scaled(path: Path, hu: np.ndarray, affine: np.ndarray) -> Path:
    """Float HU stored as int16 with scl_slope / scl_inter (nibabel picks them to fit the data)."""
    img = nib.Nifti1Image(hu.astype(np.float32), affine)
    img.set_data_dtype(np.int16)
    nib.save(img, str(path))
    assert nib.load(str(path)).dataobj.slope != 1.0
    return path


def make_lits_tree(root: Path, n: int = 6) -> Path:
    """n cases split over 'Training Batch 1/2' like the LiTS download, .nii and .nii.gz. Case 1 is tumour-free,
    case 2 has a non-canonical affine, case 3 int16 with scl_slope/inter, case 4 float32 HU with int16 labels,
    case 5 uint8 voxels with float64 labels."""
    for i in range(n):
        folder = root / f"Training Batch {1 + i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        ext = ".nii" if i % 3 == 0 else ".nii.gz"
        vol, seg = make_case(seed=i, tumor=i != 1)
        affine = LPS
        if i == 2:
            vol, seg = odd_case(seed=i)
            affine = ODD
        if i == 3:
            write_scaled(folder / f"volume-{i}{ext}", vol * 1.37 + 0.3, affine)
        else:
            if i == 4:
                vol, seg = vol.astype(np.float32) + 0.25, seg.astype(np.int16)
            if i == 5:
                vol, seg = np.clip(vol + 60, 0, 255).astype(np.uint8), seg.astype(np.float64)
            write_nifti(folder / f"volume-{i}{ext}", vol, affine)
        write_nifti(folder / f"segmentation-{i}{ext}", seg, affine)
    return root


def make_msd_tree(root: Path, n: int = 4) -> Path:
    """Task03_Liver: imagesTr/liver_N.nii.gz + labelsTr/liver_N.nii.gz, macOS '._' junk, an unlabelled imagesTs."""
    task = root / "Task03_Liver"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        vol, seg = odd_case(seed=i) if i == 1 else make_case(seed=i)
        affine = ODD if i == 1 else LPS
        write_nifti(task / "imagesTr" / f"liver_{i}.nii.gz", vol, affine)
        write_nifti(task / "labelsTr" / f"liver_{i}.nii.gz", seg, affine)
        (task / "imagesTr" / f"._liver_{i}.nii.gz").write_bytes(b"\x00\x05\x16\x07 resource fork")
    write_nifti(task / "imagesTs" / "liver_200.nii.gz", make_case()[0], LPS)
    (task / "dataset.json").write_text("{}")
    return task


def test_lits_discovery_recursive_mixed_extensions(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS")
    (root / "Training Batch 1" / "._volume-0.nii").write_bytes(b"junk")  # hidden files are ignored
    cases, problems = find_lits(root)
    assert [c.case_id for c in cases] == ["0", "1", "2", "3", "4", "5"] and not problems
    assert cases[0].image.name == "volume-0.nii" and cases[1].image.name == "volume-1.nii.gz"
    assert all(c.label.parent == c.image.parent for c in cases)


def test_lits_label_in_another_folder_is_found(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=2)
    (root / "labels").mkdir()
    (root / "Training Batch 2" / "segmentation-1.nii.gz").rename(root / "labels" / "segmentation-1.nii.gz")
    cases, problems = find_lits(root)
    assert not problems and cases[1].label == root / "labels" / "segmentation-1.nii.gz"


def test_lits_missing_label_and_orphan_label_are_problems(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=4)
    (root / "Training Batch 1" / "segmentation-2.nii.gz").unlink()
    (root / "Training Batch 2" / "volume-3.nii").unlink()
    cases, problems = find_lits(root)
    assert [c.case_id for c in cases] == ["0", "1"]
    assert [(p.case_id, Path(p.path).name) for p in problems] == [("2", "volume-2.nii.gz"), ("3", "segmentation-3.nii")]
    assert "no segmentation-2.nii[.gz] beside it; add the label file" in problems[0].reason
    assert "no volume-3.nii[.gz] for this segmentation" in problems[1].reason
    assert all("\n" not in p.reason for p in problems)


def test_lits_structural_errors(tmp_path):
    with pytest.raises(LitsError, match="data folder not found"):
        find_lits(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LitsError, match="no volume-N.nii"):
        find_lits(tmp_path / "empty")
    root = make_lits_tree(tmp_path / "LiTS", n=2)
    vol, _ = make_case()
    write_nifti(root / "Training Batch 2" / "volume-0.nii.gz", vol, LPS)  # a second copy of case 0
    with pytest.raises(LitsError, match="case 0 also found at"):
        find_lits(root)
    msd = make_msd_tree(tmp_path / "msd")
    with pytest.raises(LitsError, match="use data=msd"):
        find_lits(msd)


def test_msd_discovery(tmp_path):
    task = make_msd_tree(tmp_path / "data")
    for root in (task, task.parent):  # the task folder or its parent
        cases, problems = find_msd(root)
        assert [c.case_id for c in cases] == ["0", "1", "2", "3"] and not problems
        assert cases[2].image == task / "imagesTr/liver_2.nii.gz" and cases[2].label == task / "labelsTr/liver_2.nii.gz"
    (task / "labelsTr/liver_3.nii.gz").unlink()
    cases, problems = find_msd(task)
    assert [c.case_id for c in cases] == ["0", "1", "2"]
    assert problems[0].case_id == "3" and "labelsTr/liver_3.nii.gz; add the label file" in problems[0].reason
    with pytest.raises(LitsError, match="no imagesTr/ folder"):
        find_msd(tmp_path)  # tmp_path/data/Task03_Liver is two levels down


def test_csv_pairs(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=3)
    listing = tmp_path / "lists" / "cases.csv"
    listing.parent.mkdir()
    listing.write_text(
        "image,label,case_id\n"
        "../LiTS/Training Batch 1/volume-0.nii,../LiTS/Training Batch 1/segmentation-0.nii,a0\n"
        f"{root}/Training Batch 2/volume-1.nii.gz,{root}/Training Batch 2/segmentation-1.nii.gz,\n"
        "# a comment line\n"
        "../LiTS/Training Batch 1/volume-2.nii.gz,../LiTS/missing.nii.gz,c2\n"
    )
    cases, problems = read_pairs_csv(listing)
    assert [c.case_id for c in cases] == ["a0", "1"]
    assert cases[0].image.resolve() == (root / "Training Batch 1/volume-0.nii").resolve()
    assert (
        len(problems) == 1
        and problems[0].case_id == "c2"
        and "missing.nii.gz: label file not found (listed in" in problems[0].reason
    )
    bad = tmp_path / "bad.csv"
    bad.write_text("volume,seg\na,b\n")
    with pytest.raises(LitsError, match="needs a header line with columns image,label"):
        read_pairs_csv(bad)
    bad.write_text("image,label,case_id\na.nii,b.nii,x\nc.nii,d.nii,x\n")
    with pytest.raises(LitsError, match="case id x already used on line 2"):
        read_pairs_csv(bad)
    bad.write_text("image,label,case_id\na.nii,b.nii,../x\n")
    with pytest.raises(LitsError, match="must be letters, digits"):
        read_pairs_csv(bad)
    with pytest.raises(LitsError, match="CSV list not found"):
        read_pairs_csv(tmp_path / "nope.csv")


def test_discover_dispatches_on_layout(tmp_path):
    task = make_msd_tree(tmp_path / "data")
    cases, _ = discover(OmegaConf.create({"layout": "msd", "root": str(task)}))
    assert len(cases) == 4
    with pytest.raises(LitsError, match="data.layout=nifti: unknown layout"):
        discover(OmegaConf.create({"layout": "nifti", "root": str(task)}))


def test_ids_from_file_names():
    assert id_from_filename("liver_12.nii.gz") == "12"
    assert id_from_filename("volume-007.nii") == "7"
    assert id_from_filename("ct_scan_a.nii") == "ct_scan_a"
    assert id_from_filename("patient12.nii.gz") == "patient12"


def test_truncated_gzip_is_still_discovered(tmp_path):
    """Discovery only looks at names; reading the truncated file fails later, per case (see test_data_prepare)."""
    root = make_lits_tree(tmp_path / "LiTS", n=2)
    truncate(root / "Training Batch 2" / "volume-1.nii.gz")
    cases, problems = find_lits(root)
    assert len(cases) == 2 and not problems
    with pytest.raises((EOFError, OSError)):
        gzip.decompress((root / "Training Batch 2" / "volume-1.nii.gz").read_bytes())
