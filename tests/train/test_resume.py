"""Exact resume: a run stopped by SIGTERM, resumed, SIGKILLed mid-epoch, resumed again ends with the same weights
(torch.equal on every tensor) as one uninterrupted run; a checkpoint of another network is refused."""

import json

import pytest
import torch
from conftest import FAULTS, run_cli, tensors, train_args, train_config

# every test here starts from a smoke training run in a child process
pytestmark = pytest.mark.slow

# deterministic CPU smoke run: 2 epochs x 8 steps; last.pt also every 3 steps
RESUMABLE = ["trainer.deterministic=true", "trainer.save_every_steps=3"]


def train(work, run, *overrides):
    # one thread so results never depend on how the machine's cores are shared
    args = train_args(run, "trainer.num_threads=1", *RESUMABLE, *overrides, debug=FAULTS)
    return run_cli("train.py", *args, cwd=work)


def load(work, run, name="last.pt"):
    return torch.load(work / "outputs" / run / "checkpoints" / name, weights_only=True)


def history(work, run):
    return [json.loads(line) for line in (work / "outputs" / run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("resume")
    result = train(work, "straight")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def test_interrupted_run_resumes_to_the_same_weights(work):
    # 1. SIGTERM arrives at the start of step 5: the step finishes, last.pt is saved at (epoch 1, batch 6), exit 128+15
    result = train(work, "broken", "faults.kill_at_step=5", "faults.kill_signal=SIGTERM")
    assert result.returncode == 143, result.stderr[-3000:]
    output = result.stdout + result.stderr  # hydra logs to stdout
    assert "stopped by SIGTERM at step 6" in output and "Traceback" not in output
    state = load(work, "broken")
    assert (state["position"], state["step"], state["epoch"]) == ({"epoch": 1, "batch": 6}, 6, 0)  # none completed

    # 2. resumed (auto), then SIGKILLed at the start of step 11 (epoch 2, batch 3): the last save was step 9
    result = train(work, "broken", "faults.kill_at_step=11")
    assert result.returncode == -9, result.stderr[-3000:]
    assert "resuming from" in result.stdout + result.stderr
    state = load(work, "broken")
    assert (state["position"], state["step"], state["epoch"]) == ({"epoch": 2, "batch": 1}, 9, 1)

    # 3. resumed to the end: skips the batch of epoch 2 that step 9 consumed, redoes the two lost steps
    result = train(work, "broken")
    assert result.returncode == 0, result.stderr[-3000:]
    straight, resumed = load(work, "straight"), load(work, "broken")
    assert straight["step"] == resumed["step"] == 16
    for part in ("model", "optimizer"):
        a, b = tensors(straight[part]), tensors(resumed[part])
        assert a.keys() == b.keys() and a
        unequal = [k for k in a if not torch.equal(a[k], b[k])]
        assert not unequal, f"{part}: {unequal[:5]}"
    for part in ("scheduler", "scaler", "best"):
        assert straight[part] == resumed[part], part
    # the epoch means (carried across the kills) and the validation numbers match too; one record per epoch
    drop = ("elapsed_s", "train/samples_per_s")
    clean = [
        [{k: v for k, v in r.items() if k not in drop} for r in history(work, run)] for run in ("straight", "broken")
    ]
    assert clean[0] == clean[1] and [r["epoch"] for r in clean[1]] == [1, 2]
    assert not [p for p in (work / "outputs/broken/checkpoints").iterdir() if p.name.startswith(".")]


def config(work, run, *overrides):
    """The run's config composed in this process; no trainer.num_threads: no global thread-count change in pytest."""
    return train_config(work, run, *RESUMABLE, *overrides, debug=FAULTS)


def test_checkpoint_of_another_network_is_refused(work):
    from lits.core.errors import LitsError
    from lits.train.task import train as run

    with pytest.raises(
        LitsError,
        match=r"last.pt: checkpoint of a different network \(model.channels: \[8, 16, 32\] -> \[8, 16, 64\]\)",
    ):
        run(config(work, "straight", "model.channels=[8,16,64]"))


def test_fresh_start_over_an_existing_run_is_refused(work):
    from lits.core.errors import LitsError
    from lits.train.task import train as run

    with pytest.raises(LitsError, match="already holds a training run; continue it with trainer.resume=auto"):
        run(config(work, "straight", "trainer.resume=null"))
