"""Whole-volume prediction: slice batches through the 2D network, padded to the network's size multiple."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device, amp: str):
    """amp: 'off', 'fp16' (CUDA) or 'bf16'; 'auto' = fp16 on CUDA, off on CPU."""
    if amp == "auto":
        amp = "fp16" if device.type == "cuda" else "off"
    if amp == "off":
        return contextlib.nullcontext()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def predict_volume(model: torch.nn.Module, image: np.ndarray, device: torch.device, batch_size: int = 16,
                   amp: str = "auto", size_multiple: int = 16, temperature: float = 1.0) -> np.ndarray:
    """Sigmoid probabilities (2, Z, Y, X) float32 (liver, tumour) for a (Z, Y, X) image in [0, 1].

    Reads the (possibly memory-mapped) image a batch of slices at a time. `temperature` is the loss's
    sigmoid temperature, so probabilities mean at inference what they meant in training.
    """
    model.eval()
    z_count, height, width = image.shape
    pad_y, pad_x = -height % size_multiple, -width % size_multiple
    probs = np.empty((2, z_count, height, width), dtype=np.float32)
    for start in range(0, z_count, batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(image[start : start + batch_size], dtype=np.float32))[:, None]
        batch = torch.nn.functional.pad(batch, (0, pad_x, 0, pad_y))
        batch = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(batch)
        out = torch.sigmoid(logits.float() / temperature)[:, :, :height, :width]
        probs[:, start : start + len(out)] = out.permute(1, 0, 2, 3).cpu().numpy()
    return probs
