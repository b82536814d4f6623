"""Devices and mixed precision: which device a setting names, which AMP mode runs on it."""

from __future__ import annotations

import contextlib

import torch

from lits.core.errors import LitsError


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
    if amp == "auto":
        return "fp16" if device.type == "cuda" else "off"
    if amp == "fp16" and device.type != "cuda":
        raise LitsError("trainer.amp=fp16 needs CUDA; use trainer.amp=bf16 or off on CPU")
    if amp not in ("off", "fp16", "bf16"):
        raise LitsError(f"trainer.amp={amp}: choose auto, off, fp16 or bf16")
    return amp


def autocast(device: torch.device, amp: str):
    """amp: 'off', 'fp16' (CUDA) or 'bf16'; 'auto' = fp16 on CUDA, off on CPU."""
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "off"
    if amp == "off":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)
