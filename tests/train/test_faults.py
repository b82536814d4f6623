"""Non-finite losses: the step is skipped and counted (train/bad_steps), `trainer.max_bad_steps` in a row abort with
one clear error; BatchNorm statistics touched by a skipped step are put back."""

import json
import math

import pytest
import torch
from conftest import FAULTS, run_cli, train_args, train_config

from lits.core.errors import LitsError


def config(work, run, *overrides):
    """A one-epoch, one-thread smoke training."""
    return train_config(work, run, "trainer.max_epochs=1", "trainer.num_threads=1", *overrides, debug=FAULTS)


@pytest.fixture
def work(tmp_path):
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)  # run() applied trainer.num_threads to this pytest process


@pytest.mark.slow
def test_nan_batches_are_skipped_counted_and_logged(work):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lits.train.task import train as run

    # steps 3 and 4 in a row stay below max_bad_steps=3; a good step in between resets the count
    summary = run(config(work, "skip", "faults.nan_steps=[1,3,4]", "trainer.max_bad_steps=3"))
    assert summary["bad_steps"] == 3
    run_dir = work / "outputs/skip"
    [record] = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert record["train/bad_steps"] == 3 and math.isfinite(record["train/loss"])
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert state["bad_steps"] == 3 and state["step"] == 8
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(s["exp_avg"]).all() for s in state["optimizer"]["state"].values())
    assert int(state["optimizer"]["state"][0]["step"]) == 5  # 8 batches, 3 skipped: 5 optimizer steps
    events = EventAccumulator(str(run_dir / "tensorboard/train"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/bad_steps")] == [3]


@pytest.mark.slow
def test_too_many_bad_steps_in_a_row_abort_with_a_clear_error(work):
    from lits.train.task import train as run

    with pytest.raises(
        LitsError,
        match=r"3 non-finite losses in a row \(epoch 1, step 3, trainer.max_bad_steps=3\): "
        r"training diverged or the data holds NaN/Inf; lower optim.lr",
    ):
        run(config(work, "abort", "faults.nan_steps=[1,2,3,4]", "trainer.max_bad_steps=3"))
    assert not (work / "outputs/abort/checkpoints/last.pt").exists()


@pytest.mark.slow
def test_an_error_inside_the_loop_with_loader_workers_exits_instead_of_hanging(tmp_path):
    """The loader's persistent workers ignore SIGTERM; an error in the loop must still end the process (it used to
    wait for them forever after printing the error)."""
    args = train_args(
        "abort", "data.num_workers=2", "faults.nan_steps=[1,2,3,4]", "trainer.max_bad_steps=3", debug=FAULTS
    )
    result = run_cli("train.py", *args, cwd=tmp_path, timeout=240)
    assert result.returncode == 2, result.stderr[-2000:]  # the warnings of the skipped steps come before the error
    assert result.stderr.strip().splitlines()[-1].startswith("error: 3 non-finite losses in a row (epoch 1, step 3")


def test_skipped_step_puts_batchnorm_statistics_back_and_a_good_one_keeps_them():
    from lits.train.step import NormStatsGuard

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)).train()
    model(torch.rand(2, 1, 8, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    guard = NormStatsGuard(model)
    guard.save()
    model(torch.full((2, 1, 8, 8), float("inf")))  # poisons running_mean / running_var, counts a batch
    assert not torch.isfinite(model[1].running_mean).all() and int(model[2].num_batches_tracked) == 2
    guard.restore_where(torch.tensor(1.0))  # a bad step: every buffer (float and integer) as saved
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    guard.save()
    model(torch.rand(2, 1, 8, 8))
    after = {k: v.clone() for k, v in model.state_dict().items()}
    assert not torch.equal(after["1.running_mean"], before["1.running_mean"])
    guard.restore_where(torch.tensor(0.0))  # a good step: the new statistics stand
    assert all(torch.equal(after[k], v) for k, v in model.state_dict().items())


def test_stop_signals_are_deferred_inside_the_loop_only():
    import signal

    from lits.core.errors import Stopped
    from lits.train.signals import StopRequest

    outside = StopRequest()
    with pytest.raises(Stopped) as stopped:
        outside._handle(signal.SIGTERM, None)  # setup, data preparation: at once
    assert stopped.value.code == 143 and stopped.value.note == "before training"
    inside = StopRequest()
    inside.deferred = True
    inside._handle(signal.SIGINT, None)  # the loop finishes its step, saves, exits 130
    assert inside.requested and inside.signum == signal.SIGINT
    with pytest.raises(Stopped) as stopped:
        inside._handle(signal.SIGINT, None)  # a second Ctrl-C: at once, no KeyboardInterrupt traceback
    assert stopped.value.code == 130 and "second time" in stopped.value.note
