"""Case discovery in the three layouts (LiTS folders, MSD Task03_Liver, CSV lists) and the problems it reports.

The tree builders (make_lits_tree, make_msd_tree) are in conftest.py.
"""

import gzip
from pathlib import Path

import pytest
from conftest import LPS, make_case, make_lits_tree, make_msd_tree, truncate, write_nifti
from omegaconf import OmegaConf

from lits.core.errors import LitsError
from lits.data.sources import discover, find_lits, find_msd, id_from_filename, read_pairs_csv


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
