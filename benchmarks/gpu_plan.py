"""What one run of `python -m benchmarks gpu` measures: the sizes (`Plan`) and, with --budget-s, what fits the time
given (`Budget`).

The budget runs a core whatever it costs (the environment, the fp16 smoke training and evaluation, the smallest
throughput row: the first light of the CUDA path), then the rest in order of use while time remains, smallest sizes
first: the larger throughput rows (each only if the previous row's time, scaled by batch and network, still fits
before the reserve kept for the sections after it), the loader, predict and DDP (each only if its share of the budget
is still left). Whatever does not fit is listed in the report as skipped, with the budget and the time used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

# relative cost of a training step per network (measured on a CPU: unet_small 1, unet ~3.5, resunet34 ~4.5)
MODEL_COST = {"unet_small": 1.0, "unet": 3.5, "resunet34": 4.5}
# the share of the budget each section after the throughput rows needs to start
SHARES = {"loader": 0.08, "predict": 0.15, "ddp": 0.07}


@dataclass
class Plan:
    """What one run of the check measures (full on a GPU, tiny with --quick)."""

    models: list[str]
    batches: list[int]
    variant_batch: int  # where channels_last off / compile on are measured (unless --all-variants)
    crop: int
    steps: int  # training steps per epoch (one warm-up epoch, one timed, one watched for host synchronisations)
    pure_steps: int
    data: dict  # synthetic data: size, cases, slices
    ct_slices: int
    ct_size: int
    compile: bool
    crops: dict = field(default_factory=dict)  # the crops benchmark's options (benchmarks/crops.py)
    workers: int | None = None  # data.num_workers of the loop (None: the schema's)


def plan_for(args) -> Plan:
    if args.quick:
        return Plan(["unet_small"], [2], 2, 64, 3, 3, {"size": 96, "cases": 5, "slices": [20, 28]}, 24, 128,
                    args.compile, {"batch_size": 4, "batches": 20, "workers": 1}, workers=1)  # fmt: skip
    return Plan(["unet_small", "unet", "resunet34"], [8, 16, 32], 16, 256, 30, 20,
                {"size": 512, "cases": 8, "slices": [48, 72]}, 300, 512, not args.no_compile,
                {"batch_size": 32, "batches": 60, "workers": None})  # fmt: skip


@dataclass
class Budget:
    """--budget-s: seconds for the whole check (None: no limit), and what was skipped to keep to it."""

    seconds: float | None
    started: float = field(default_factory=time.perf_counter)
    skipped: list[str] = field(default_factory=list)
    last_row: tuple[float, int, str] | None = None  # (seconds, batch, model) of the last throughput row

    def used(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.used()

    def reserve(self) -> float:
        """What the sections after the throughput rows need (their shares of the budget)."""
        return 0.0 if self.seconds is None else self.seconds * sum(SHARES.values())

    def allows_row(self, model: str, batch: int, what: str) -> bool:
        """Whether a throughput row fits: the first always does; later ones by the last row's time scaled."""
        if self.seconds is None or self.last_row is None:
            return True
        seconds, last_batch, last_model = self.last_row
        estimate = seconds * batch / last_batch * MODEL_COST[model] / MODEL_COST[last_model]
        return self._fits(estimate + self.reserve(), what)

    def row_done(self, seconds: float, batch: int, model: str) -> None:
        self.last_row = (seconds, batch, model)

    def allows_section(self, name: str, what: str) -> bool:
        """Whether a later section (loader, predict, ddp) still has its share of the budget."""
        if self.seconds is None:
            return True
        return self._fits(self.seconds * SHARES[name], what)

    def _fits(self, needed: float, what: str) -> bool:
        if needed <= self.left():
            return True
        self.skipped.append(what)
        return False

    def summary(self) -> str:
        """The report's budget line."""
        if self.seconds is None:
            return "no time budget (--budget-s)"
        held = "held" if self.used() <= self.seconds else "exceeded (the core alone took longer)"
        return f"budget {self.seconds:.0f} s: used {self.used():.0f} s, {held}; skipped: {len(self.skipped)}"
