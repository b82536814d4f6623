"""studies/transfer.py: each post-processing setting's change against the default, and the checkpoints it refuses."""

import pytest
import torch

from studies import transfer

HYSTERESIS = "hysteresis + keep_confident 0.8"


def post(dice, recall, precision, any_overlap, small):
    return dict(zip(transfer.MEASURES.values(), (dice, recall, precision, any_overlap, small)))


def test_report_gives_each_settings_change_against_the_default_over_checkpoints():
    results = {
        "baseline/seed0/last.pt": {"default": post(0.6, 0.4, 0.5, 0.6, 0.2),
                                   "no size filter": post(0.6, 0.4, 0.3, 0.7, 0.2),
                                   HYSTERESIS: post(0.62, 0.5, 0.5, 0.7, 0.3)},
        "baseline/seed1/last.pt": {"default": post(0.5, 0.5, 0.6, 0.6, float("nan")),
                                   "no size filter": post(0.5, 0.5, 0.4, 0.6, float("nan")),
                                   HYSTERESIS: post(0.5, 0.3, 0.6, 0.6, float("nan"))},
    }  # fmt: skip
    text = transfer.report(results)
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:-1]] for line in text.splitlines()
             if line.startswith("| no size filter") or line.startswith(f"| {HYSTERESIS}")}  # fmt: skip
    # precision -0.2 on both; recall any overlap +0.1 and 0; the split without small lesions (NaN) is left out
    assert lines["no size filter"] == ["+0.000 ± 0.000", "+0.000 ± 0.000", "-0.200 ± 0.000", "+0.050 ± 0.071", "+0.000"]
    # recall +0.1 and -0.2: mean -0.05, sample sd 0.212
    assert lines[HYSTERESIS][:2] == ["+0.010 ± 0.014", "-0.050 ± 0.212"]
    assert text.count("| baseline/seed1/last.pt |") == 3  # one row per setting, each checkpoint


def test_tuned_and_unreadable_checkpoints_are_refused_in_one_line(tmp_path):
    tuned = tmp_path / "best.pt"
    torch.save({"model": {}, "config": {}, "tuning": {"chosen": 0}}, tuned)
    with pytest.raises(SystemExit, match=r"best.pt is tuned on validation .* tune_after=false$"):
        transfer.refuse_tuned(tuned)
    broken = tmp_path / "last.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match=r"^error: .*last.pt: not a readable lits checkpoint"):
        transfer.refuse_tuned(broken)
