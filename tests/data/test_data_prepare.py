"""Preparation of LiTS / MSD / CSV trees: cached slices equal the windowed, reoriented source voxels; bad cases fail
or are skipped (and reported); resampling; liver z-range; parallel, atomic and resumable (a killed run continues)."""

import json
import os
import re
import signal
import subprocess
import time

import nibabel as nib
import numpy as np
import pytest
from conftest import (
    LPS,
    PREPARE_DATA,
    WINDOW,
    big_tree,
    data_cfg,
    make_case,
    make_lits_tree,
    make_msd_tree,
    prepare_args,
    prepare_cmd,
    run_cli,
    truncate,
    write_nifti,
)

from lits.core.errors import LitsError
from lits.data import nifti
from lits.data.cache import cache_key
from lits.data.nifti import CasePaths, load_case
from lits.data.prepare import SKIPPED_FILE, cache_folder, prepare, prepare_all
from lits.data.preprocess import window_to_unit
from lits.data.sampling import SliceIndex


def reference(image_path, label_path):
    """Independent of lits.data.nifti: nibabel's own closest-canonical reorientation, then (Z, Y, X) and the window."""
    img = nib.as_closest_canonical(nib.load(str(image_path)))
    seg = nib.as_closest_canonical(nib.load(str(label_path)))
    hu = np.transpose(img.get_fdata(dtype=np.float32), (2, 1, 0))
    label = np.transpose(np.asarray(seg.dataobj), (2, 1, 0)).astype(np.uint8)
    zooms = img.header.get_zooms()[:3]
    return window_to_unit(hu, WINDOW), label, (zooms[2], zooms[1], zooms[0])


def all_cases(cases_by_split):
    return [c for cases in cases_by_split.values() for c in cases]


def assert_matches_source(case, pair):
    unit, label, spacing = reference(pair.image, pair.label)
    assert case.image.dtype == np.float16 and case.label.dtype == np.uint8
    assert case.image.shape == unit.shape
    assert np.abs(case.image.astype(np.float32) - unit).max() <= 5e-4  # float16 rounding of [0, 1]
    assert np.array_equal(case.label, label)
    assert case.spacing == pytest.approx(spacing)
    # and back: Orientation.to_source restores the file's voxel order
    orientation = nifti.Orientation(
        np.array(case.meta["orientation"]["ornt"]),
        tuple(case.meta["orientation"]["source_shape"]),
        np.array(case.meta["orientation"]["source_affine"]),
    )
    assert np.array_equal(
        orientation.to_source(np.asarray(case.label)), np.asarray(nib.load(str(pair.label)).dataobj).astype(np.uint8)
    )


def test_lits_tree_cached_slices_equal_windowed_reoriented_source(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS")
    splits, cases = prepare(data_cfg(root, tmp_path / "cache"), seed=0, progress=False)
    from lits.data.sources import find_lits

    pairs = {p.case_id: p for p in find_lits(root)[0]}
    cached = all_cases(cases)
    assert sorted(c.case_id for c in cached) == [str(i) for i in range(6)]
    for case in cached:
        assert_matches_source(case, pairs[case.case_id])
    odd = next(c for c in cached if c.case_id == "2")
    assert odd.meta["orientation"]["source_shape"] == [12, 40, 36] and odd.image.shape == (12, 36, 40)
    assert odd.spacing == pytest.approx((3.0, 0.9, 0.75))
    assert next(c for c in cached if c.case_id == "1").stats["tumor_voxels"].sum() == 0  # tumour-free case is fine
    assert next(c for c in cached if c.case_id == "3").meta["scaling"][0] != 1.0


def test_msd_and_csv_trees(tmp_path):
    task = make_msd_tree(tmp_path / "msd")
    splits, cases = prepare(
        data_cfg(task, tmp_path / "cache", layout="msd", split={"val": [0], "test": [1]}), seed=0, progress=False
    )
    assert splits == {"train": ["2", "3"], "val": ["0"], "test": ["1"]}
    for case in all_cases(cases):
        assert_matches_source(
            case,
            CasePaths(
                case.case_id,
                task / f"imagesTr/liver_{case.case_id}.nii.gz",
                task / f"labelsTr/liver_{case.case_id}.nii.gz",
            ),
        )
    listing = tmp_path / "pairs.csv"
    listing.write_text(
        "image,label\n"
        + "".join(
            f"msd/Task03_Liver/imagesTr/liver_{i}.nii.gz,msd/Task03_Liver/labelsTr/liver_{i}.nii.gz\n" for i in range(4)
        )
    )
    splits_csv, cases_csv = prepare(
        data_cfg(listing, tmp_path / "cache", layout="csv", split={"val": [0], "test": [1]}), seed=0, progress=False
    )
    assert splits_csv == splits
    for a, b in zip(all_cases(cases), all_cases(cases_csv)):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)


def broken_tree(tmp_path):
    """Six LiTS cases: 0 has no segmentation, 1 is a truncated .nii.gz, 5 has a label value 7."""
    root = make_lits_tree(tmp_path / "LiTS")
    (root / "Training Batch 1" / "segmentation-0.nii").unlink()
    truncate(root / "Training Batch 2" / "volume-1.nii.gz")
    vol, seg = make_case(seed=5)
    seg[0, 0, 0] = 7
    write_nifti(root / "Training Batch 2" / "segmentation-5.nii.gz", seg, LPS)
    return root


def test_on_error_fail_names_the_file_and_the_fix(tmp_path):
    root = broken_tree(tmp_path)
    cfg = data_cfg(root, tmp_path / "cache", split={"val": [2], "test": [3]})
    with pytest.raises(LitsError) as err:
        prepare(cfg, seed=0, progress=False)
    message = str(err.value)
    assert "volume-0.nii: no segmentation-0.nii[.gz] beside it" in message and "data.on_error=skip" in message
    assert "\n" not in message
    write_nifti(root / "Training Batch 1" / "segmentation-0.nii", make_case(seed=0)[1], LPS)
    with pytest.raises(
        LitsError,
        match=r"volume-1.nii.gz: cannot read NIfTI .*re-download or re-export the file; or set data.on_error=skip",
    ):
        prepare(cfg, seed=0, progress=False)
    folder = cache_folder(cfg)
    assert not [
        p for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"
    ]  # no temp folder left behind
    for case_dir in (p for p in folder.iterdir() if not p.name.startswith(".")):
        assert (case_dir / "meta.json").exists()  # whatever is there is complete


def test_on_error_skip_leaves_bad_cases_out_and_reports_them(tmp_path):
    root = broken_tree(tmp_path)
    cfg = data_cfg(root, tmp_path / "cache", on_error="skip", split={"val": [2, 5], "test": [3, 1]})
    run_dir = tmp_path / "run"
    splits, cases = prepare(cfg, seed=0, progress=False, report_dir=run_dir)
    assert splits == {"train": ["4"], "val": ["2"], "test": ["3"]}
    assert [c.case_id for c in cases["val"]] == ["2"]
    records = json.loads((run_dir / SKIPPED_FILE).read_text())
    assert [(r["case"], r["split"]) for r in records] == [("0", None), ("1", "test"), ("5", "val")]
    assert "no segmentation-0" in records[0]["reason"] and "cannot read NIfTI" in records[1]["reason"]
    assert "label values [7] outside {0,1,2}" in records[2]["reason"] and records[2]["path"].endswith("volume-5.nii.gz")
    folder = cache_folder(cfg)
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == ["2", "3", "4"]
    cached, problems = prepare_all(cfg, progress=False)  # what scripts/prepare_data.py does
    assert sorted(cached) == ["2", "3", "4"] and len(problems) == 3


def test_a_training_run_reads_its_test_splits_headers_at_start_up(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=5)
    test_ct = next(root.rglob("volume-3.nii*"))
    test_ct.write_bytes(b"garbage" * 100)  # found only when scored, after training, unless read now
    cfg = data_cfg(root, tmp_path / "cache", split={"val": [2], "test": [3]})
    with pytest.raises(LitsError, match=r"volume-3.nii.* cannot read NIfTI .*\(case 3, checked at start-up\)"):
        prepare(cfg, seed=0, only=("train", "val"), progress=False)
    skip = data_cfg(root, tmp_path / "cache", on_error="skip", split={"val": [2], "test": [3, 4]})
    splits, _ = prepare(skip, seed=0, only=("train", "val"), progress=False, report_dir=tmp_path / "run")
    assert splits["test"] == ["4"]
    assert [r["case"] for r in json.loads((tmp_path / "run" / SKIPPED_FILE).read_text())] == ["3"]


def test_streaming_in_small_slabs_gives_the_same_arrays(tmp_path, monkeypatch):
    root = make_lits_tree(tmp_path / "LiTS", n=3)
    from lits.data.sources import find_lits

    pairs = find_lits(root)[0]
    whole = [load_case(p) for p in pairs]
    monkeypatch.setattr(nifti, "CHUNK_SLICES", 5)  # 12 slices -> slabs of 5, 5, 2
    for pair, expected in zip(pairs, whole):
        case = load_case(pair)
        assert np.array_equal(case.image, expected.image) and np.array_equal(case.label, expected.label)
    _, cases = prepare(data_cfg(root, tmp_path / "cache", split={"val": [1], "test": [2]}), seed=0, progress=False)
    for case in all_cases(cases):
        assert_matches_source(case, next(p for p in pairs if p.case_id == case.case_id))


def test_parallel_preparation_equals_serial(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=4)
    _, serial = prepare(data_cfg(root, tmp_path / "c1", split={"val": [1], "test": [2]}), seed=0, progress=False)
    _, parallel = prepare(
        data_cfg(root, tmp_path / "c2", prepare_workers=2, split={"val": [1], "test": [2]}), seed=0, progress=False
    )
    for a, b in zip(all_cases(serial), all_cases(parallel)):
        assert a.case_id == b.case_id and np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
        assert a.meta["orientation"] == b.meta["orientation"]


def test_liver_margin_restricts_training_slices_only(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=3)  # liver on canonical slices 2..9 of 12, 2.5 mm apart (case 2: 3 mm)
    _, full = prepare(data_cfg(root, tmp_path / "cache", split={"val": [1], "test": [2]}), seed=0, progress=False)
    _, near = prepare(
        data_cfg(root, tmp_path / "cache", liver_margin_mm=5, split={"val": [1], "test": [2]}), seed=0, progress=False
    )
    assert full["train"][0].meta["train_z_range"] == [0, 12]  # liver_margin_mm=None: every slice
    case = near["train"][0]
    liver = np.flatnonzero(case.stats["liver_voxels"])
    assert case.meta["train_z_range"] == [liver[0] - 2, liver[-1] + 3]  # ceil(5 / 2.5) = 2 slices each side
    assert case.image.shape == full["train"][0].image.shape  # the full volume stays available
    index = SliceIndex(near["train"])
    assert len(index) == liver[-1] - liver[0] + 5 and index.z.min() == liver[0] - 2
    assert len(SliceIndex(full["train"])) == 12


def test_in_plane_resampling_keeps_the_native_grid_for_metrics(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=3)
    cfg = data_cfg(root, tmp_path / "cache", target_spacing_xy=[1.6, 1.6], split={"val": [1], "test": [2]})
    _, cases = prepare(cfg, seed=0, progress=False)
    case = cases["train"][0]
    assert cache_folder(cfg).name == cache_key(WINDOW, root, (1.6, 1.6)) != cache_key(WINDOW, root)
    assert case.image.shape == (12, 18, 20) and case.spacing == pytest.approx((2.5, 1.6, 1.6))
    assert case.meta["resampled"] and case.native_spacing == pytest.approx((2.5, 0.8, 0.8))
    source = load_case(
        CasePaths("0", root / "Training Batch 1/volume-0.nii", root / "Training Batch 1/segmentation-0.nii")
    )
    assert np.array_equal(case.native_label, source.label)
    # downsampled labels keep the nested structure and roughly the liver volume
    assert set(np.unique(case.label)) <= {0, 1, 2}
    assert (case.label >= 1).sum() * 4 == pytest.approx((source.label >= 1).sum(), rel=0.1)
    # predictions on the cached grid map back onto the native grid
    probs = np.stack([(case.label >= 1), (case.label == 2)]).astype(np.float32)
    native = case.to_native(probs)
    assert native.shape == (2, *source.label.shape)
    dice = 2 * ((native[0] >= 0.5) & (source.label >= 1)).sum() / ((native[0] >= 0.5).sum() + (source.label >= 1).sum())
    assert dice > 0.95


def test_changed_source_is_rebuilt_and_unchanged_reused(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=3)
    cfg = data_cfg(root, tmp_path / "cache", split={"val": [1], "test": [2]})
    prepare(cfg, seed=0, progress=False)
    meta = cache_folder(cfg) / "0" / "meta.json"
    stamp = meta.stat().st_mtime_ns
    prepare(cfg, seed=0, progress=False)
    assert meta.stat().st_mtime_ns == stamp
    time.sleep(0.01)
    write_nifti(root / "Training Batch 1/volume-0.nii", make_case(seed=11)[0], LPS)
    _, cases = prepare(cfg, seed=0, progress=False)
    assert meta.stat().st_mtime_ns != stamp
    assert_matches_source(
        cases["train"][0],
        CasePaths("0", root / "Training Batch 1/volume-0.nii", root / "Training Batch 1/segmentation-0.nii"),
    )


@pytest.mark.slow
def test_killed_prepare_data_resumes_and_nothing_is_corrupt(tmp_path):
    root, cache, n = big_tree(tmp_path / "LiTS", 16), tmp_path / "cache", 16
    folder = cache / cache_key(WINDOW, root)
    proc = subprocess.Popen(
        prepare_cmd(root, cache),
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill while a case is being written, after >= 2 are done
        names = [p.name for p in folder.iterdir()] if folder.exists() else []
        done = [p for p in names if p.isdigit()]
        if len(done) >= 2 and any(".tmp-" in p for p in names):
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job: main process and pool workers
    proc.wait()
    done = [p for p in folder.glob("[0-9]*") if (p / "meta.json").exists()]
    assert 2 <= len(done) < n, "the run finished before it could be killed; make the cases bigger"
    # everything visible under a case name is complete; half-written work only ever lives in hidden temp folders
    assert all((p / "meta.json").exists() for p in folder.iterdir() if not p.name.startswith("."))
    stamps = {p.name: (p / "meta.json").stat().st_mtime_ns for p in done}
    leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
    print(f"killed with {len(done)}/{n} cases done; half-written: {leftovers}")
    (folder / ".15.tmp-otherhost-1-abc").mkdir(exist_ok=True)  # and one from an earlier crash, for good measure

    result = run_cli(PREPARE_DATA, *prepare_args(root, cache, workers=2), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{n} cases" in result.stdout
    assert sorted(p.name for p in folder.iterdir() if p.name not in (".lock",)) == sorted(str(i) for i in range(n))
    assert {
        p: (folder / p / "meta.json").stat().st_mtime_ns for p in stamps
    } == stamps  # finished cases were kept, not redone
    _, cases = prepare(data_cfg(root, cache, split={"val": [0], "test": [1]}), seed=0, progress=False)
    for case in all_cases(cases):
        assert_matches_source(
            case,
            CasePaths(
                case.case_id, root / f"volume-{case.case_id}.nii.gz", root / f"segmentation-{case.case_id}.nii.gz"
            ),
        )


@pytest.mark.slow
def test_concurrent_preparers_wait_for_each_other(tmp_path):
    root, cache = big_tree(tmp_path / "LiTS", 6), tmp_path / "cache"
    procs = [
        subprocess.Popen(
            prepare_cmd(root, cache), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    # each case was preprocessed once: whoever got the lock second found the work done (or had waited for it)
    written = [int(m.group(1)) for _, err in outputs for m in [re.search(r"preprocessing (\d+) cases", err)] if m]
    assert sum(written) == 6, outputs
    folder = cache / cache_key(WINDOW, root)
    assert sorted(p.name for p in folder.iterdir() if p.name != ".lock") == [str(i) for i in range(6)]


def test_prepare_data_script_errors_are_one_line(tmp_path):
    result = run_cli(PREPARE_DATA, "data=msd", f"data.root={tmp_path}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    expected = (
        f"error: {tmp_path}: no imagesTr/ folder; point data.root at the MSD Task03_Liver folder (imagesTr/, labelsTr/)"
    )
    assert result.stderr.strip().splitlines()[-1] == expected


def test_a_full_disk_is_an_error_even_with_skip(tmp_path, monkeypatch):
    import errno

    root = make_lits_tree(tmp_path / "LiTS", n=3)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np.lib.format, "open_memmap", full)
    cfg = data_cfg(root, tmp_path / "cache", on_error="skip", split={"val": [1], "test": [2]})
    with pytest.raises(
        LitsError,
        match=r"cannot write the preprocessing cache \(No space left on device\); "
        r"free disk space or set data.cache_dir",
    ):
        prepare(cfg, seed=0, progress=False)
    assert [p.name for p in cache_folder(cfg).iterdir()] == [".lock"]  # no temp folder left behind


def test_a_case_folder_missing_a_file_is_rebuilt(tmp_path):
    root = make_lits_tree(tmp_path / "LiTS", n=3)
    cfg = data_cfg(root, tmp_path / "cache", split={"val": [1], "test": [2]})
    prepare(cfg, seed=0, progress=False)
    (cache_folder(cfg) / "0" / "image.npy").unlink()
    _, cases = prepare(cfg, seed=0, progress=False)
    assert_matches_source(
        cases["train"][0],
        CasePaths("0", root / "Training Batch 1/volume-0.nii", root / "Training Batch 1/segmentation-0.nii"),
    )
