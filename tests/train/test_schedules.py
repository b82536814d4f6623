"""Schedules that do not depend on how big an epoch is: under a time budget the LR and the loss's alpha follow the
clock step by step; fixed-length runs keep their per-epoch schedule."""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import SMOKE, compose_train, run_cli

from lits.core.config import TrainConfig, typed
from lits.train.fit import set_schedule
from lits.train.loss import alpha_at
from lits.train.optim import TimeBudget, lr_at


def fake_run(minutes, epoch=0, clock=0.0, spent=0.0):
    cfg = typed(TrainConfig, compose_train("trainer.max_epochs=30"))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    budget = TimeBudget(minutes, cfg.trainer.max_epochs, spent_s=spent)
    return SimpleNamespace(cfg=cfg, budget=budget, optimizer=optimizer, clock=clock, state=SimpleNamespace(epoch=epoch))


def test_fixed_length_runs_keep_the_per_epoch_schedule():
    for epoch in (0, 4, 5, 10, 15, 29):
        run = fake_run(None, epoch=epoch, clock=123.0)  # the clock plays no part without a budget
        assert set_schedule(run) == alpha_at(epoch, run.cfg.loss.schedule)
        assert run.optimizer.param_groups[0]["lr"] == lr_at(run.cfg.optim, epoch, 30)


@pytest.mark.parametrize("epoch", [0, 3])  # the epoch index does not matter under a budget, only the clock
def test_a_budget_moves_the_schedules_with_the_clock(epoch):
    positions = {0.0: 0.0, 12.0: 6.0, 20.0: 10.0, 40.0: 20.0, 59.9: 29.95, 90.0: 30.0}  # seconds -> position
    for seconds, position in positions.items():
        run = fake_run(1.0, epoch=epoch, clock=seconds)
        assert set_schedule(run) == pytest.approx(alpha_at(position, run.cfg.loss.schedule))
        assert run.optimizer.param_groups[0]["lr"] == pytest.approx(lr_at(run.cfg.optim, position, 30))
    assert [set_schedule(fake_run(1.0, clock=s)) for s in (0.0, 12.0, 40.0)] == pytest.approx([0.0, 0.34, 1.0])


def test_a_resumed_budget_counts_the_earlier_sessions():
    run = fake_run(1.0, clock=10.0, spent=30.0)  # 40 of 60 s spent: position 20, pure Dice
    assert set_schedule(run) == 1.0


@pytest.mark.slow
def test_one_epoch_longer_than_the_budget_still_runs_the_whole_progressive_schedule(tmp_path):
    """The run's only epoch is cut by the clock: its alpha starts at BCE (0) and ends at pure Dice (1)."""
    result = run_cli("train.py", *SMOKE, "trainer.max_time=0.1", "trainer.max_epochs=30", "loss.schedule.bce_epochs=5",
                     "loss.schedule.dice_epoch=15", "data.sampling.samples_per_epoch=1000000", "trainer.progress=false",
                     "trainer.log_images=false", "hydra.run.dir=outputs/run", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [record] = [json.loads(line) for line in (tmp_path / "outputs/run/history.jsonl").read_text().splitlines()]
    assert record["train/alpha"] == 0.0 and record["train/alpha_end"] == 1.0
    assert "val/tumor_dice_post" in record  # cut by the clock, still validated
