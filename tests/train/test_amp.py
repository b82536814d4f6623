"""fp16 autocast + GradScaler, the CUDA training path, exercised on the CPU: scaled backward, unscale before clipping,
a step skipped on a gradient overflow with the scale halved (not a bad step), the scaler state through a kill and a
resume, and a short fp16 training that learns as float32 does. (The 2-process DDP overflow: test_distributed.py.)"""

import json

import pytest
import torch
from conftest import FAULTS, run_cli, tensors, train_args, train_config

from lits.core.device import autocast, resolve_amp

INITIAL_SCALE = torch.amp.GradScaler("cpu").get_scale()  # 65536: PyTorch's default init_scale


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def optimizer_steps(state) -> int:
    """Optimizer steps AdamW really took (its per-parameter step count), whatever the loop attempted."""
    return int(state["optimizer"]["state"][0]["step"])


@pytest.fixture
def work(tmp_path):
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)  # the in-process runs applied trainer.num_threads to this pytest process


def test_fp16_runs_on_the_cpu():
    cpu = torch.device("cpu")
    assert resolve_amp("fp16", cpu) == "fp16" and resolve_amp("auto", cpu) == "off"
    conv = torch.nn.Conv2d(1, 2, 3)
    with autocast(cpu, "fp16"):
        assert conv(torch.rand(1, 1, 8, 8)).dtype == torch.float16
    scaler = torch.amp.GradScaler("cpu")
    loss = conv(torch.rand(1, 1, 8, 8)).float().sum()
    scaler.scale(loss).backward()
    assert torch.allclose(conv.bias.grad, torch.full((2,), 36.0 * INITIAL_SCALE))  # 6x6 outputs per channel, scaled


@pytest.mark.slow
def test_overflow_skips_the_step_and_halves_the_scale_a_nan_loss_is_a_bad_step(work):
    from lits.train.task import train as run

    # 8 steps of one epoch, fp16: the backward pass of step 2 overflows, the loss of step 5 is NaN
    cfg = train_config(
        work,
        "amp",
        "trainer.amp=fp16",
        "trainer.max_epochs=1",
        "trainer.num_threads=1",
        "faults.overflow_steps=[2]",
        "faults.nan_steps=[5]",
        debug=FAULTS,
    )
    summary = run(cfg)
    run_dir = work / "outputs/amp"
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert summary["bad_steps"] == state["bad_steps"] == 1  # the NaN loss only; the overflow is not a bad step
    assert state["step"] == 8 and optimizer_steps(state) == 6  # both steps skipped: 8 attempted, 6 taken
    # halved once, by the overflow; the NaN loss never reached the scaler: clean updates since are steps 3, 4, 6, 7
    assert state["scaler"]["scale"] == INITIAL_SCALE / 2
    assert state["scaler"]["_growth_tracker"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert all(torch.isfinite(s["exp_avg"]).all() for s in state["optimizer"]["state"].values())
    [record] = history(run_dir)
    assert record["train/bad_steps"] == 1 and record["train/grad_scale"] == INITIAL_SCALE / 2


@pytest.mark.slow
def test_overflow_without_fp16_is_refused(work):
    from lits.core.errors import LitsError
    from lits.train.task import train as run

    cfg = train_config(work, "off", "trainer.amp=off", "faults.overflow_steps=[2]", debug=FAULTS)
    with pytest.raises(LitsError, match="faults.overflow_steps needs trainer.amp=fp16"):
        run(cfg)


# deterministic fp16 smoke run: 2 epochs x 8 steps, last.pt also every 3 steps, an overflow at step 2
RESUMABLE_FP16 = [
    "trainer.amp=fp16",
    "trainer.num_threads=1",
    "trainer.deterministic=true",
    "trainer.save_every_steps=3",
    "faults.overflow_steps=[2]",
]


@pytest.mark.slow
def test_fp16_run_killed_and_resumed_continues_with_the_scaler_state(tmp_path):
    def train(run, *overrides):
        return run_cli("train.py", *train_args(run, *RESUMABLE_FP16, *overrides, debug=FAULTS), cwd=tmp_path)

    def last(run):
        return torch.load(tmp_path / "outputs" / run / "checkpoints/last.pt", weights_only=True)

    assert train("straight").returncode == 0
    killed = train("broken", "faults.kill_at_step=11")  # SIGKILL at the start of step 11: last saved at step 9
    assert killed.returncode == -9, killed.stderr[-3000:]
    saved = last("broken")
    # what the resumed run must pick up: the scale the overflow halved and 6 clean steps since (3..8)
    assert saved["step"] == 9 and saved["scaler"]["scale"] == INITIAL_SCALE / 2
    assert saved["scaler"]["_growth_tracker"] == 6
    resumed = train("broken")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout + resumed.stderr
    straight, again = last("straight"), last("broken")
    # a scaler restarted from scratch would end at tracker 7 (steps 9..15) and scale INITIAL_SCALE
    assert straight["scaler"] == again["scaler"] and again["scaler"]["_growth_tracker"] == 13
    assert optimizer_steps(straight) == optimizer_steps(again) == 15
    a, b = tensors([straight["model"], straight["optimizer"]]), tensors([again["model"], again["optimizer"]])
    assert a.keys() == b.keys() and a
    unequal = [k for k in a if not torch.equal(a[k], b[k])]
    assert not unequal, unequal[:5]


@pytest.mark.slow
def test_short_fp16_training_learns_as_float32_does(work):
    from lits.train.task import train as run

    common = (
        "trainer.num_threads=1",
        "trainer.deterministic=true",
        "trainer.max_epochs=4",
        "loss.schedule.kind=constant",  # one loss for every epoch: its values are comparable
        "optim.lr=3e-3",
    )
    losses = {}
    for amp in ("fp16", "off"):
        run(train_config(work, amp, f"trainer.amp={amp}", *common))
        records = history(work / "outputs" / amp)
        losses[amp] = [r["train/loss"] for r in records]
        if amp == "fp16":
            # the scaler may back off on a real overflow (as it does in the first steps on a GPU), never by much
            assert all(INITIAL_SCALE / 16 <= r["train/grad_scale"] <= INITIAL_SCALE for r in records)
            assert [r["train/bad_steps"] for r in records] == [0] * 4
            assert records[-1]["val/liver_dice"] > 0.5
    fp16, fp32 = losses["fp16"], losses["off"]
    assert fp16[-1] < 0.8 * fp16[0]  # it learns
    assert fp16 == pytest.approx(fp32, rel=0.03)  # and as float32 does, within fp16's rounding


@pytest.mark.slow
def test_float32_checkpoint_resumes_under_fp16_with_a_fresh_scaler(work, caplog):
    from lits.train.task import train as run

    run(train_config(work, "switch", "trainer.amp=off", "trainer.max_epochs=1", "trainer.num_threads=1"))
    run(train_config(work, "switch", "trainer.amp=fp16", "trainer.max_epochs=2", "trainer.num_threads=1"))
    assert "no GradScaler state (not trained with fp16); the scaler starts at its initial scale" in caplog.text
    state = torch.load(work / "outputs/switch/checkpoints/last.pt", weights_only=True)
    assert state["step"] == 16 and state["scaler"]["scale"] <= INITIAL_SCALE
