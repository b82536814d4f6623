"""The user's path, through the real entry points: train (smoke) -> evaluate from the checkpoint alone; bad input."""

import json
import shutil

import pytest
import torch
from conftest import SMOKE, read_csv_rows, run_cli

# every test here runs train.py or evaluate.py in a child process
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    result = run_cli("train.py", *SMOKE, "hydra.run.dir=outputs/smoke/run", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, work / "outputs/smoke/run"


def test_training_writes_checkpoints_tensorboard_and_split(trained):
    work, run_dir = trained
    for name in ("last.pt", "best.pt"):
        state = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert {"model", "optimizer", "scheduler", "scaler", "epoch", "best", "config", "splits"} <= set(state)
        assert state["config"]["name"] == "smoke"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    splits = json.loads((run_dir / "split.json").read_text())
    ids = [c for ids in splits.values() for c in ids]
    assert len(ids) == len(set(ids)) == 5 and all(splits.values())
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    assert [h["train/alpha"] for h in history] == [0.0, 0.3]  # smoke: 1 BCE epoch, then hybrid
    assert 0.0 <= history[-1]["val/tumor_dice"] <= 1.0 and 0.0 <= history[-1]["val/liver_dice"] <= 1.0


def test_tensorboard_has_the_documented_tags(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = trained
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/bce", "train/dice", "train/alpha", "train/lr", "val/liver_dice", "val/tumor_dice"):
        assert tag in tags["scalars"], tag
    assert "val/overlay" in tags["images"]


def test_evaluate_from_the_checkpoint_alone(trained, tmp_path):
    work, run_dir = trained
    ckpt = tmp_path / "moved.pt"
    shutil.copy(run_dir / "checkpoints/best.pt", ckpt)
    shutil.rmtree(work / "data/cache")  # preprocessing is rebuilt from what the checkpoint records
    result = run_cli("evaluate.py", f"ckpt={ckpt}", "hydra.run.dir=outputs/eval", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_csv_rows(work / "outputs/eval/cases.csv")
    test_ids = json.loads((run_dir / "split.json").read_text())["test"]
    assert sorted({r["case"] for r in rows}) == sorted(test_ids)
    assert {r["stage"] for r in rows} == {"raw", "post"}
    metrics = json.loads((work / "outputs/eval/metrics.json").read_text())
    for stage in ("raw", "post"):
        assert 0.0 <= metrics[stage]["tumor_dice_per_case"] <= 1.0
        assert metrics[stage]["num_cases"] == len(test_ids)
    assert "tumor_dice" in result.stdout


def last_line_error(result):
    """Looser than conftest.one_line_error: any failing exit status, and the last stderr line is the error."""
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr[-2000:]
    return lines[-1]


def test_missing_data_root_is_one_clear_line(tmp_path):
    result = run_cli("train.py", "experiment=bce", "data=lits", "hydra.run.dir=run", cwd=tmp_path)
    assert "data.root" in last_line_error(result)
    result = run_cli(
        "train.py", "experiment=bce", "data=lits", f"data.root={tmp_path}/nowhere", "hydra.run.dir=run", cwd=tmp_path
    )
    assert "nowhere: data folder not found" in last_line_error(result)
    assert not (tmp_path / "run/checkpoints").exists()


def test_bad_checkpoints_are_refused(tmp_path):
    assert "checkpoint not found" in last_line_error(
        run_cli("evaluate.py", "ckpt=missing.pt", "hydra.run.dir=run", cwd=tmp_path)
    )
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    assert "not a readable lits checkpoint" in last_line_error(
        run_cli("evaluate.py", "ckpt=corrupt.pt", "hydra.run.dir=run", cwd=tmp_path)
    )
    assert not (tmp_path / "run/metrics.json").exists()


def test_unknown_override_fails(tmp_path):
    result = run_cli("train.py", "trainer.max_epoch=3", cwd=tmp_path)
    assert result.returncode != 0 and "max_epoch" in result.stderr
