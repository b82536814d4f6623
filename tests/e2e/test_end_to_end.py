"""The user's path, through the real entry points: train (smoke) -> evaluate from the checkpoint alone; bad input."""

import json
import re
import shutil

import pytest
import torch
from conftest import SMOKE, read_csv_rows, run_cli

# every test here runs train.py or evaluate.py in a child process
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The smoke training as a user runs it; what it printed is in <work>/train.stdout."""
    work = tmp_path_factory.mktemp("e2e")
    result = run_cli("train.py", *SMOKE, "hydra.run.dir=outputs/smoke/run", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    (work / "train.stdout").write_text(result.stdout)
    return work, work / "outputs/smoke/run"


def log_messages(stdout: str) -> list[str]:
    """The console's log lines without their HH:MM:SS prefix."""
    return [line[9:] for line in stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]


def test_training_writes_checkpoints_tensorboard_and_split(trained):
    work, run_dir = trained
    for name in ("last.pt", "best.pt"):
        state = torch.load(run_dir / "checkpoints" / name, weights_only=True)
        assert {"model", "optimizer", "scheduler", "scaler", "epoch", "best", "config", "splits"} <= set(state)
        assert state["config"]["name"] == "smoke"
    assert list((run_dir / "tensorboard/train").glob("events.out.tfevents.*"))
    splits = json.loads((run_dir / "split.json").read_text())
    ids = [c for ids in splits.values() for c in ids]
    assert len(ids) == len(set(ids)) == 5 and all(splits.values())
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["train/alpha"] for h in history] == [0.0, 0.3]  # smoke: 1 BCE epoch, then hybrid
    assert 0.0 <= history[-1]["val/tumor_dice"] <= 1.0 and 0.0 <= history[-1]["val/liver_dice"] <= 1.0


def test_every_run_tunes_its_checkpoints_and_says_so(trained):
    """tune_after (on by default): calibration and post-processing chosen on validation are stored in best.pt and
    last.pt (the same weights here, tuned once), and named in train.log and the closing summary with their cost."""
    work, run_dir = trained
    states = [torch.load(run_dir / "checkpoints" / name, weights_only=True) for name in ("best.pt", "last.pt")]
    for state in states:
        record = state["tuning"]
        assert record["split"] == "val" and record["criterion"] == "lesion_score" and record["tta"] is False
        assert state["inference"]["postprocess"] == record["candidates"][record["chosen"]]["postprocess"]
        assert state["inference"]["calibration"] == [record["calibration"][h]["factor"] for h in ("liver", "tumour")]
        assert record["seconds"] > 0
    assert states[0]["tuning"] == states[1]["tuning"]  # best.pt is last.pt's epoch: one tuning serves both
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert set(summary["tuned"]) == {"best.pt", "last.pt"}
    log = (run_dir / "train.log").read_text()
    lines = log_messages((work / "train.stdout").read_text())
    for name, line in summary["tuned"].items():
        assert line.startswith("tuned post-processing: tumour threshold ") and line.endswith(" s)")
        assert f"{name}: {line}" in log and f"{name}: {line}" in lines


def test_tensorboard_has_the_documented_tags(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = trained
    events = EventAccumulator(str(run_dir / "tensorboard/train"))
    events.Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/bce", "train/dice", "train/alpha", "train/lr", "val/liver_dice", "val/tumor_dice"):
        assert tag in tags["scalars"], tag
    assert {tag.split("/")[0] for tag in tags["scalars"]} == {"train", "val", "train_step"}
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]  # epochs, numbered as everywhere else
    assert [e.step for e in events.Scalars("train_step/loss")] == [10]  # optimizer steps: their own tag family
    [picture] = events.Images("val/overlay")
    assert picture.step == 2 and picture.width >= 900 and picture.height >= 350


def test_console_names_the_run_first_and_the_next_commands_last(trained):
    work, run_dir = trained
    lines = log_messages((work / "train.stdout").read_text())
    assert lines[0] == "run folder: outputs/smoke/run"
    watch = lines.index("watch it:   tensorboard --logdir outputs/smoke/run/tensorboard")  # once start-up passed
    assert watch < lines.index(next(line for line in lines if line.startswith("plan: ")))
    assert any(line.startswith("expected: ") and " samples/s over " in line for line in lines)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split(" ")[1] for e in epochs] == ["1/2", "2/2"]
    assert " ETA " in epochs[0] and " | val liver " in epochs[1] and all(len(e) <= 120 for e in epochs)
    assert " (α 0.00: bce " in epochs[0] and " (α 0.30: bce " in epochs[1]  # the smoke schedule: BCE, then hybrid
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["epochs"] == 2 and summary["samples_per_s"] > 0
    done = lines.index(next(line for line in lines if line.startswith("done: 2 epochs in ")))
    assert lines[done + 3].startswith(f"| best | {summary['best_epoch']} ")  # the summary table: best epoch's val Dice
    assert lines[-3:] == [
        f"best.pt: outputs/smoke/run/checkpoints/best.pt (highest {summary['best_metric']}, "
        "ties: val/liver_dice_post, then later)",
        "next:    python evaluate.py ckpt=outputs/smoke/run/checkpoints/best.pt",
        "         tensorboard --logdir outputs/smoke/run/tensorboard",
    ]


def test_progress_png_draws_the_learning_curves(trained):
    from matplotlib.image import imread

    _, run_dir = trained
    pixels = imread(run_dir / "progress.png")
    assert pixels.shape[:2] == (750, 1200) and pixels[..., :3].std() > 0.1
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".progress.png")]  # written atomically


def test_evaluation_in_the_run_is_a_tensorboard_run_of_its_own(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, run_dir = trained
    result = run_cli("evaluate.py", f"ckpt={run_dir}/checkpoints/best.pt", "split=val", "hydra.run.dir=outputs/ev",
                     "progress=false", cwd=work)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.relative_to(run_dir / "tensorboard").as_posix() for p in (run_dir / "tensorboard").rglob("*")
                  if p.is_dir()) == ["evaluate", "evaluate/val", "train"]  # fmt: skip
    train, evaluation = (EventAccumulator(str(run_dir / "tensorboard" / d)) for d in ("train", "evaluate/val"))
    train.Reload()
    evaluation.Reload()
    assert not [t for t in train.Tags()["scalars"] if not t.startswith(("train/", "train_step/", "val/"))]
    assert sorted(evaluation.Tags()["scalars"]) == sorted(
        ["val/tumor_dice_post", "val/tumor_dice_global_post", "val/liver_dice_post", "val/liver_dice_global_post",
         "val/lesion_recall_iou50", "val/lesion_precision_iou50", "val/lesion_recall_iou0", "val/lesion_precision_iou0"]
    )  # fmt: skip
    assert set(evaluation.Tags()["scalars"]) <= set(train.Tags()["scalars"])  # every point lands on a training curve
    # the validation split at best.pt's epoch, on the validation curve's tag: the number the training run logged there
    [scored] = evaluation.Scalars("val/tumor_dice_post")
    logged = {e.step: e.value for e in train.Scalars("val/tumor_dice_post")}
    assert scored.step == 2 and scored.value == pytest.approx(logged[2], abs=1e-6)
    report = (work / "outputs/ev/report.html").read_text()
    assert (
        "training_progress" not in report and report.count("data:image/png;base64,") == 3
    )  # curves, detection curve, plot
    assert (work / "outputs/ev/training_progress.png").is_file()


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
    first = next(line for line in result.stdout.splitlines() if not re.match(r"\d\d:\d\d:\d\d ", line))
    cases = f"{len(test_ids)} case" + ("s" if len(test_ids) > 1 else "")
    assert first.startswith(f"test split, moved.pt (epoch 2), {cases}, stage post: tumour Dice ")  # the headline


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
