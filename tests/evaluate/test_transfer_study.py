"""studies/transfer.py: each post-processing setting's change against the default, and the checkpoints it refuses."""

from collections import Counter

import nibabel as nib
import numpy as np
import pytest
import torch

from studies import transfer
from studies.outlines import CLASSES, SMALL, case_labels, outline_classes, split_outlines

HYSTERESIS = "hysteresis + keep_confident 0.8"


def post(dice, recall, precision, any_overlap, small, outlines=(1, 0, 0, 0, 1)):
    return {**dict(zip(transfer.MEASURES.values(), (dice, recall, precision, any_overlap, small))),
            "outlines": Counter(dict(zip(CLASSES, outlines)))}  # fmt: skip


def test_report_gives_each_settings_change_against_the_default_over_checkpoints():
    results = {
        "baseline/seed0/last.pt": {"default": post(0.6, 0.4, 0.5, 0.6, 0.2),
                                   "no size filter": post(0.6, 0.4, 0.3, 0.7, 0.2),
                                   HYSTERESIS: post(0.62, 0.5, 0.5, 0.7, 0.3, (2, 0, 0, 0, 0))},
        "baseline/seed1/last.pt": {"default": post(0.5, 0.5, 0.6, 0.6, float("nan")),
                                   "no size filter": post(0.5, 0.5, 0.4, 0.6, float("nan")),
                                   HYSTERESIS: post(0.5, 0.3, 0.6, 0.6, float("nan"))},
    }  # fmt: skip
    text = transfer.report(results)
    changes = text.split("### how the reference lesions were outlined")[0]
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:-1]] for line in changes.splitlines()
             if line.startswith("| no size filter") or line.startswith(f"| {HYSTERESIS}")}  # fmt: skip
    # precision -0.2 on both; recall any overlap +0.1 and 0; the split without small lesions (NaN) is left out
    assert lines["no size filter"] == ["+0.000 ± 0.000", "+0.000 ± 0.000", "-0.200 ± 0.000", "+0.050 ± 0.071", "+0.000"]
    # recall +0.1 and -0.2: mean -0.05, sample sd 0.212
    assert lines[HYSTERESIS][:2] == ["+0.010 ± 0.014", "-0.050 ± 0.212"]
    assert text.count("| baseline/seed1/last.pt |") == 3  # one row per setting, each checkpoint
    # outlines summed over both checkpoints: hysteresis found the first checkpoint's missed lesion
    assert "| default | 4 | 2 (50%) | 0 (0%) | 0 (0%) | 0 (0%) | 2 (50%) |" in " ".join(text.split())
    assert f"| {HYSTERESIS} | 4 | 3 (75%) | 0 (0%) | 0 (0%) | 0 (0%) | 1 (25%) |" in " ".join(text.split())


def outline_case() -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) tumour masks (Z, Y, X), one slice: a lesion of each outline class, two merged."""
    pred, ref = np.zeros((2, 3, 40, 40), dtype=bool)
    ref[1, 5:9, 5:9] = pred[1, 5:9, 5:9] = True  # the same square: IoU 1
    ref[1, 5:11, 20:26], pred[1, 7:9, 22:24] = True, True  # 4 of 36 voxels predicted: too small
    ref[1, 20:22, 5:7], pred[1, 18:24, 3:9] = True, True  # 4 in a 36-voxel prediction: too large
    ref[1, 30:33, 20:23] = ref[1, 30:33, 26:29] = True  # two lesions 3 voxels apart (the scorer keeps them apart) ...
    pred[1, 28:35, 18:31] = True  # ... in one 91-voxel prediction: IoU 18 / 91
    ref[1, 20:23, 30:33] = True  # nothing predicted: missed
    # one column apart in x: the scorer's in-plane dilation makes them one reference lesion, found by the same two
    # squares (only if the axial planes are the last two axes)
    ref[1, 12:15, 30:33] = ref[1, 12:15, 34:37] = pred[1, 12:15, 30:33] = pred[1, 12:15, 34:37] = True
    return pred, ref


def test_each_reference_lesion_falls_in_one_outline_class():
    pred, ref = outline_case()
    assert outline_classes(pred, ref) == Counter({"IoU > 0.5": 2, "too small": 1, "too large": 1, "merged": 2,
                                                  "missed": 1})  # fmt: skip
    # 20 mm3 voxels: the 36-voxel lesion (11.1 mm equivalent diameter) is the only one over 10 mm
    small = {
        k.removeprefix(SMALL): v for k, v in outline_classes(pred, ref, voxel_mm3=20.0).items() if k.startswith(SMALL)
    }
    assert small == {"IoU > 0.5": 2, "too large": 1, "merged": 2, "missed": 1}


def test_too_small_outlines_count_the_voxels_they_leave_out_and_those_hysteresis_could_reach():
    pred, ref = outline_case()
    prob = np.full(pred.shape, 0.29, dtype=np.float32)  # just below hysteresis_low = 0.3 everywhere ...
    prob[1, 5:8, 20:26] = 0.3  # ... but in three rows of the too-small lesion (6 x 6, 2 x 2 of it predicted)
    counts = outline_classes(pred, ref, prob)
    assert counts["too small: voxels left out"] == 36 - 4
    assert counts["too small: left out, p >= low"] == 3 * 6 - 2  # row 7 holds two predicted voxels
    assert counts["too small"] == 1 and "too small: voxels left out" not in outline_classes(pred, ref)


def test_split_outlines_reads_exported_predictions_against_the_data_folder(tmp_path):
    pred, ref = (2 * mask.T.astype(np.uint8) for mask in outline_case())  # files hold (X, Y, Z)
    (tmp_path / "predictions").mkdir()
    (tmp_path / "data").mkdir()
    for case in ("3", "7"):
        nib.save(nib.Nifti1Image(pred, np.eye(4)), tmp_path / f"predictions/test-segmentation-{case}.nii")
        nib.save(nib.Nifti1Image(ref, np.eye(4)), tmp_path / f"data/segmentation-{case}.nii.gz")
        nib.save(nib.Nifti1Image(np.zeros(ref.shape, np.int16), np.eye(4)), tmp_path / f"data/volume-{case}.nii.gz")
    tumour = np.zeros(ref.shape, dtype=np.float32)  # (X, Y, Z): the too-small lesion's first three rows at 0.6
    tumour[20:26, 5:8, 1] = 0.6
    probabilities = nib.Nifti1Image(np.stack([np.zeros_like(tumour), tumour], axis=-1), np.eye(4))
    nib.save(probabilities, tmp_path / "predictions/test-segmentation-3_probabilities.nii.gz")  # case 3 only
    labels = case_labels({"layout": "lits", "root": str(tmp_path / "data")})  # as a checkpoint's data config has it
    assert labels == {case: tmp_path / f"data/segmentation-{case}.nii.gz" for case in ("3", "7")}
    classes = {"IoU > 0.5": 4, "too small": 2, "too large": 2, "merged": 4, "missed": 2}
    assert split_outlines(tmp_path / "predictions", labels, ["3", "7"]) == Counter(
        {**classes, "too small: voxels left out": 32, "too small: left out, p >= low": 16,
         **{SMALL + k: n for k, n in classes.items()}}  # 1 mm voxels: every lesion is under 10 mm
    )  # fmt: skip
    with pytest.raises(SystemExit, match=r"test-segmentation-9.nii is missing; rerun .* save_predictions=true"):
        split_outlines(tmp_path / "predictions", labels, ["9"])
    nib.save(nib.Nifti1Image(pred, np.eye(4)), tmp_path / "predictions/test-segmentation-9.nii")
    with pytest.raises(SystemExit, match=r"case 9 has no segmentation in the checkpoint's data.root"):
        split_outlines(tmp_path / "predictions", labels, ["9"])


def test_tuned_and_unreadable_checkpoints_are_refused_in_one_line(tmp_path):
    tuned = tmp_path / "best.pt"
    torch.save({"model": {}, "config": {}, "tuning": {"chosen": 0}}, tuned)
    with pytest.raises(SystemExit, match=r"best.pt is tuned on validation .* tune_after=false$"):
        transfer.refuse_tuned(tuned)
    broken = tmp_path / "last.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"^error: .*last.pt: not a readable lits checkpoint"):
        transfer.refuse_tuned(broken)
