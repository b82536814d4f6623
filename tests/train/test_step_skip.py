"""The bad step decided on the device (lits/train/step.py): a non-finite loss changes no parameter, optimizer state,
loss scale or growth count; a finite one updates exactly as an unguarded step does; the host reads the steps back
only at a read, and accounts for them in order (sums, bad-step counts, the abort naming the step it happened at)."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lits.core.config.train import OptimConfig
from lits.core.errors import LitsError
from lits.train.optim import build_optimizer
from lits.train.state import EpochSums
from lits.train.step import LOG_EVERY, PendingSteps, settle, update

BAD, GOOD = torch.tensor(1.0), torch.tensor(0.0)


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def tiny_run(name: str, fp16: bool, clip: float = 1.0):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    return SimpleNamespace(
        optimizer=build_optimizer(model.parameters(), OptimConfig(name=name, lr=0.1, weight_decay=0.01, t_max=10.0)),
        scaler=torch.amp.GradScaler("cpu", enabled=fp16),
        cfg=SimpleNamespace(trainer=SimpleNamespace(grad_clip=clip)),
        state=SimpleNamespace(model=model),
    )


def loss_of(run, poisoned: bool = False) -> torch.Tensor:
    x = torch.arange(8.0).reshape(2, 4) / 8
    if poisoned:
        x = x * math.nan
    return run.state.model(x).square().mean()


def optimizer_state(run) -> list[torch.Tensor]:
    return [v for s in run.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]


def parameters(run) -> list[torch.Tensor]:
    return [p.detach().clone() for p in run.state.model.parameters()]


def snapshot(run) -> list[torch.Tensor]:
    return [t.detach().clone() for t in [*run.state.model.parameters(), *optimizer_state(run)]]


def untouched(run, parameters_before) -> bool:
    """The parameters as they were, and the optimizer state as before a first step (all zeros: AdamW's step count
    and moments, SGD's momentum)."""
    return same(parameters(run), parameters_before) and not any(t.any() for t in optimizer_state(run))


@pytest.mark.parametrize("name", ["adamw", "sgd"])
@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("clip", [1.0, 0.0])  # unscaled before clipping, or by the fused optimizer itself
def test_a_bad_step_changes_nothing_and_the_next_good_one_is_a_first_step(name, fp16, clip):
    guarded, plain = tiny_run(name, fp16, clip), tiny_run(name, fp16, clip)
    before = parameters(guarded)
    scale = guarded.scaler.get_scale() if fp16 else None
    update(guarded, loss_of(guarded, poisoned=True), BAD)  # the first step is bad: skipped on the device
    assert untouched(guarded, before)
    if fp16:  # the bad loss never reached the scaler: same scale, no growth counted
        assert guarded.scaler.get_scale() == scale and int(guarded.scaler._growth_tracker) == 0
    for _ in range(2):  # then two good steps: exactly what two steps of a run without the bad one make
        update(guarded, loss_of(guarded), GOOD)
        update(plain, loss_of(plain), GOOD)
    assert same(snapshot(guarded), snapshot(plain)) and not untouched(guarded, before)
    if fp16:
        assert int(guarded.scaler._growth_tracker) == int(plain.scaler._growth_tracker) == 2


def test_a_finite_loss_marked_bad_is_skipped_too():
    # the skip follows the flag (all-reduced over ranks), not the local loss: a rank whose own loss was finite skips
    run = tiny_run("adamw", fp16=False)
    before = parameters(run)
    update(run, loss_of(run), BAD)
    assert untouched(run, before)


def test_a_gradient_overflow_under_fp16_is_the_scalers_skip_with_the_scale_halved():
    run = tiny_run("adamw", fp16=True)
    before, scale = parameters(run), run.scaler.get_scale()
    first = next(run.state.model.parameters())
    handle = first.register_hook(lambda grad: torch.full_like(grad, math.inf))
    update(run, loss_of(run), GOOD)  # a finite loss, an overflowing backward pass
    handle.remove()
    assert untouched(run, before) and run.scaler.get_scale() == scale / 2


def pending_run(rows: list[tuple[float, bool]], max_bad_steps: int = 3):
    run = SimpleNamespace(
        pending=PendingSteps(torch.device("cpu")),
        state=SimpleNamespace(sums=EpochSums(), bad_in_row=0, bad_total=0, epoch=0),
        cfg=SimpleNamespace(trainer=SimpleNamespace(max_bad_steps=max_bad_steps)),
        ctx=SimpleNamespace(is_main=True),
        ckpt_dir=Path("/nonexistent/checkpoints"),
    )
    for offset, (loss, bad) in enumerate(rows):
        run.pending.add(20 + offset, torch.tensor([loss, loss / 2, loss / 4]), torch.tensor(float(bad)))
    return run


def test_settle_accounts_for_the_pending_steps_in_order():
    run = pending_run([(0.5, False), (math.nan, True), (0.25, False), (math.nan, True), (math.nan, True)])
    last, extra = settle(run, torch.tensor([1.0, 0.0, 12.5]))
    assert math.isnan(last[0]) and last[3] == 1.0 and extra == [1.0, 0.0, 12.5]
    sums = run.state.sums
    assert (sums.loss, sums.bce, sums.dice, sums.good, sums.bad) == (0.75, 0.375, 0.1875, 2, 3)
    assert run.state.bad_in_row == 2 and run.state.bad_total == 3  # the good step in between reset the count
    assert settle(run) == (None, [])  # nothing left pending


def test_the_abort_names_the_step_the_limit_was_reached_at_not_the_read():
    run = pending_run([(0.5, False), (math.nan, True), (math.nan, True), (math.nan, True), (math.nan, True)])
    with pytest.raises(LitsError, match=r"^3 non-finite losses in a row \(epoch 1, step 23, trainer.max_bad_steps=3"):
        settle(run)


def test_pending_steps_hold_a_logging_interval():
    pending = PendingSteps(torch.device("cpu"))
    for step in range(LOG_EVERY):
        pending.add(step, torch.tensor([float(step), 0.0, 0.0]), torch.tensor(0.0))
    rows, extra = pending.take()
    assert [r[0] for r in rows] == [float(s) for s in range(LOG_EVERY)] and extra == []
    assert pending.count == 0


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_steps_between_reads_never_wait_for_the_device(tmp_path, monkeypatch, amp):
    """Every way a tensor's value reaches Python (what makes a GPU's host wait; benchmarks/host_reads.py) is watched
    during the steps of a real run: between reads there is none, and at a read there is exactly one
    (PendingSteps.take). Reads of values made on the host by design are left out."""
    from conftest import train_config

    from benchmarks.host_reads import host_reads
    from lits.train import fit
    from lits.train.task import train

    step_once, read_at, per_step = fit.train_step, {}, {}

    def step(run, batch, alpha):
        before = len(reads)
        result = step_once(run, batch, alpha)
        read_at[run.state.step - 1], per_step[run.state.step - 1] = result.read, reads[before:]
        return result

    monkeypatch.setattr(fit, "train_step", step)
    threads = torch.get_num_threads()
    try:
        with host_reads(torch.device("cpu")) as reads:
            train(train_config(tmp_path, "sync", f"trainer.amp={amp}", "trainer.num_threads=1"))
    finally:
        torch.set_num_threads(threads)
    assert len(read_at) == 16  # 2 epochs of 8 steps: reads after steps 8 (epoch end), 10 and 16 (1-based)
    assert [s + 1 for s, read in read_at.items() if read] == [8, 10, 16]
    assert {s: r for s, r in per_step.items() if r and not read_at[s]} == {}
    assert {s: r for s, r in per_step.items() if read_at[s]} == {s: ["tolist in take"] for s in (7, 9, 15)}
