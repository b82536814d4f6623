"""Counting the times the host waits for the device: what `python -m benchmarks gpu` reports per training step, and
what tests/train/test_step_skip.py checks the loop against on the CPU.

On CUDA, CUDA's own sync debug mode names every synchronising call (a warning each). Elsewhere there is no device
to wait for, so the stand-in is every way a tensor's value reaches Python (HOST_READS), less the reads of values that
are made on the host by design (HOST_VALUES), which on a GPU wait for nothing.
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from collections.abc import Iterator

import torch

HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
# the augmentation draws and selects its parameters on the CPU, before they go to the device; MONAI's DiceLoss lists
# its reduction axes from a CPU arange
HOST_VALUES = ("lits/train/augment/", "torch.arange(2, len(input.shape)).tolist()")


@contextlib.contextmanager
def host_reads(device: torch.device) -> Iterator[list[str]]:
    """Inside the block, the list it yields grows by one entry per host synchronisation: CUDA's warning text on a
    CUDA device, else "<method> in <function that called it>" for each watched read."""
    reads: list[str] = []
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield reads
            finally:
                torch.cuda.set_sync_debug_mode("default")
                reads.extend(str(w.message) for w in caught if "synchroniz" in str(w.message))
        return
    originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def watch(name: str):
        original = originals[name]

        def watched(self, *args, **kwargs):
            stack = traceback.extract_stack()[:-1]
            if not any(mark in frame.filename or mark in (frame.line or "") for frame in stack for mark in HOST_VALUES):
                reads.append(f"{name} in {stack[-1].name}")
            return original(self, *args, **kwargs)

        return watched

    try:
        for name in HOST_READS:
            setattr(torch.Tensor, name, watch(name))
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
