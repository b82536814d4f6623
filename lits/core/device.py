"""Devices and mixed precision: which device a setting names, which AMP mode runs on it.

AMP modes: `fp16` is float16 autocast with a GradScaler (torch.autocast + torch.amp.GradScaler), `bf16` bfloat16
autocast (no scaler needed: bfloat16 has float32's exponent range), `off` float32. Both work on CUDA and on CPU: on
CPU fp16 is slower than float32 and exists so that the exact CUDA code path (scale, unscale, skipped steps, scale
updates, scaler state in checkpoints) runs in the tests of a machine without a GPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from lits.core.errors import LitsError

CPU_FIELDS = ("model name", "cpu family", "model", "flags")


def cpu_info() -> dict[str, str]:
    """The first processor's CPU_FIELDS in /proc/cpuinfo (Linux; empty elsewhere): what names a CPU beside timings."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in CPU_FIELDS:
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def resolve_device(name: str, local_rank: int = 0, key: str = "trainer.device") -> torch.device:
    """A device setting (auto | cpu | cuda | cuda:N) -> the device of this process (cuda:LOCAL_RANK under torchrun).

    `key` names the setting in errors (evaluate.py and predict.py call it `device`)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LitsError(f"{key}={name} but CUDA is not available; use {key}=cpu (or auto)")
        if device.index is None:
            count = torch.cuda.device_count()
            if local_rank >= count:
                raise LitsError(
                    f"LOCAL_RANK={local_rank} but only {count} GPU(s) are visible; start at most {count} "
                    "processes per node (torchrun --nproc_per_node)"
                )
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def resolve_amp(amp: str, device: torch.device) -> str:
    """The AMP mode that runs on `device`: auto = fp16 on CUDA, off elsewhere; off / fp16 / bf16 as given."""
    if amp == "auto":
        return "fp16" if device.type == "cuda" else "off"
    if amp not in ("off", "fp16", "bf16"):
        raise LitsError(f"trainer.amp={amp}: choose auto, off, fp16 or bf16")
    return amp


def autocast(device: torch.device, amp: str):
    """The autocast context of an AMP mode: 'off', 'fp16', 'bf16' or 'auto' (fp16 on CUDA, off on CPU)."""
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "off"
    if amp == "off":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)
