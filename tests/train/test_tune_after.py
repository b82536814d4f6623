"""What a training run records for inference: the flips it trained with (TTA) and, unless tune_after=false, the
post-processing chosen on its validation split (the default's end-to-end test: tests/e2e/test_end_to_end.py)."""

import json

import torch
from conftest import train_config

from lits.train.task import train


def test_a_mirrored_run_records_its_flips_and_tune_after_false_keeps_postprocess(tmp_path, caplog):
    cfg = train_config(tmp_path, "mirror", "tune_after=false", "trainer.val_tta=true", "trainer.max_epochs=1",
                       "augment.p_mirror_x=0.5", "augment.p_mirror_y=0.5")  # fmt: skip
    with caplog.at_level("WARNING"):
        summary = train(cfg)
    assert summary["tuned"] == {} and "trained without mirroring" not in caplog.text
    run_dir = tmp_path / "outputs" / "mirror"
    for name in ("best.pt", "last.pt"):
        state = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert "tuning" not in state
        assert state["inference"]["tta_flips"] == [[3], [2], [2, 3]]
        assert state["inference"]["postprocess"]["min_tumor_voxels"] == 50  # the config's, untouched
    assert json.loads((run_dir / "train_summary.json").read_text())["tuned"] == {}


def test_validation_tta_without_mirroring_says_so_once(tmp_path, caplog):
    cfg = train_config(tmp_path, "plain", "tune_after=false", "trainer.val_tta=true", "trainer.max_epochs=2",
                       "trainer.val_every=1")  # fmt: skip
    with caplog.at_level("WARNING"):
        train(cfg)
    notes = [r.getMessage() for r in caplog.records if "trained without mirroring" in r.getMessage()]
    assert notes == [
        "trainer.val_tta: tta=true, but its network was trained without mirroring (augment.p_mirror_x and "
        "p_mirror_y 0), so no flipped view matches its training: predicting without TTA"
    ]


def test_a_mirrored_run_is_tuned_with_and_without_tta_and_keeps_the_chosen_view(tmp_path):
    cfg = train_config(tmp_path, "mirror_tuned", "trainer.max_epochs=1", "augment.p_mirror_x=0.5")
    summary = train(cfg)
    record = torch.load(tmp_path / "outputs/mirror_tuned/checkpoints/best.pt", weights_only=True)["tuning"]
    assert set(record["view_scores"]) == {"identity", "tta"}
    chosen = record["view_scores"]["tta" if record["tta"] else "identity"]
    assert record["candidates"][record["chosen"]]["score"] == chosen["score"]
    assert f"flip TTA {'on' if record['tta'] else 'off'} (best " in summary["tuned"]["best.pt"]
