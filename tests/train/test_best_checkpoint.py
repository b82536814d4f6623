"""best.pt and last.pt stay a consistent pair whatever checkpoint write a SIGKILL interrupts: a run killed halfway
through writing any of its checkpoint files and then resumed ends with the same best.pt (weights and record), last.pt
and train_summary.json as an uninterrupted run."""

import json

import pytest
import torch
from conftest import FAULTS, run_cli, train_args

pytestmark = pytest.mark.slow  # smoke trainings in child processes

# Deterministic smoke run (2 epochs) validated after each epoch on a metric that improves each time (a high learning
# rate and a 0.4 output prior make the liver Dice move from the first epoch): its checkpoint writes are
# best.pt, last.pt (epoch 1), best.pt, last.pt (epoch 2).
IMPROVING = [
    "trainer.num_threads=1",
    "trainer.deterministic=true",
    "trainer.val_every=1",
    "trainer.monitor=val/liver_dice",
    "optim.lr=1e-2",
    "model.output_prior=[0.4,0.4]",
]
WRITES = ["best.pt", "last.pt", "best.pt", "last.pt"]


def train(work, run, *overrides):
    return run_cli("train.py", *train_args(run, *IMPROVING, *overrides, debug=FAULTS), cwd=work)


def checkpoint(work, run, name):
    return torch.load(work / "outputs" / run / "checkpoints" / name, weights_only=True)


def summary(work, run):
    return json.loads((work / "outputs" / run / "train_summary.json").read_text())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("best")
    result = train(work, "straight")
    assert result.returncode == 0, result.stderr[-3000:]
    history = [json.loads(line) for line in (work / "outputs/straight/history.jsonl").read_text().splitlines()]
    values = [r["val/liver_dice"] for r in history]
    assert len(values) == 2 and 0 < values[0] < values[1], f"each epoch must be a new best for this test: {values}"
    return work


@pytest.mark.parametrize("kill_at", range(1, len(WRITES) + 1), ids=[f"{i + 1}-{w}" for i, w in enumerate(WRITES)])
def test_kill_during_any_checkpoint_write_then_resume_keeps_the_pair_consistent(work, kill_at):
    run = f"killed-at-write-{kill_at}"
    result = train(work, run, f"faults.kill_during_save={kill_at}")
    assert result.returncode == -9, result.stderr[-3000:]
    folder = work / "outputs" / run / "checkpoints"
    torn = [p.name for p in folder.iterdir() if p.name.startswith(f".{WRITES[kill_at - 1]}.")]
    assert len(torn) == 1, sorted(p.name for p in folder.iterdir())  # killed inside that very write

    result = train(work, run)  # trainer.resume=auto
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Traceback" not in output and "weights are lost" not in output
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]  # the torn temp file is gone
    for name in ("best.pt", "last.pt"):
        expected, got = checkpoint(work, "straight", name), checkpoint(work, run, name)
        assert got["best"] == expected["best"] and got["epoch"] == expected["epoch"], name
        assert expected["model"].keys() == got["model"].keys()
        assert all(torch.equal(expected["model"][k], got["model"][k]) for k in expected["model"]), name
    assert checkpoint(work, run, "best.pt")["best"]["epoch"] == 2  # the second epoch (numbered from 1), as recorded
    wanted = {k: summary(work, "straight")[k] for k in ("best_metric", "best_value", "best_epoch", "epochs")}
    assert {k: summary(work, run)[k] for k in wanted} == wanted
