"""The loop's hooks: per step only the hooks with something to do between steps are called, in their order."""

from lits.train.hooks import (
    CheckpointHook,
    ConsoleHook,
    HistoryHook,
    Hook,
    Hooks,
    ProgressPlotHook,
    TensorBoardHook,
)
from lits.train.tuning_hook import TuningHook


class Counting(Hook):
    def __init__(self, calls: list, name: str):
        self.calls, self.name = calls, name

    def after_step(self, run, result) -> None:
        self.calls.append(self.name)


def test_hooks_without_step_methods_are_not_called_per_step():
    default = [TuningHook(), ConsoleHook(), TensorBoardHook(), HistoryHook(), ProgressPlotHook(), CheckpointHook()]
    hooks = Hooks(default)
    assert hooks.step_hooks["before_step"] == []  # only debug=faults's FaultHook acts before a step
    assert [type(h) for h in hooks.step_hooks["after_step"]] == [ConsoleHook, TensorBoardHook, CheckpointHook]


def test_step_hooks_run_in_order_and_epoch_hooks_all_run():
    calls = []
    hooks = Hooks([Counting(calls, "a"), Hook(), Counting(calls, "b")])
    hooks.after_step(None, None)
    hooks.before_step(None)
    assert calls == ["a", "b"]
    assert len(hooks.hooks) == 3  # the epoch and train methods still reach every hook
