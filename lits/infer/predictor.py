"""Whole-volume prediction with a PyTorch network: `TorchNetwork` runs the forward pass on any device (AMP autocast,
channels_last) for the runtime-independent loop of lits/infer/batches.py, and `predict_volume` / `predict_masks` /
`predict_batches` take a torch module and its device as evaluate, tuning, validation and predict.py call them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from lits.core.device import autocast
from lits.infer import batches
from lits.infer.batches import MaskPrediction


class TorchNetwork:
    """A torch module in eval mode as a `batches.SliceNetwork`: batches go to `device`, the forward pass runs under
    the AMP mode `amp` (lits.core.device.autocast) in channels_last, probabilities come back as float32 numpy."""

    def __init__(self, model: torch.nn.Module, device: torch.device, amp: str = "auto"):
        self.model, self.device, self.amp = model.eval(), device, amp

    def inference(self):
        return torch.inference_mode()

    def to_batch(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    def flip(self, x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        return torch.flip(x, dims)

    def pad(self, x: torch.Tensor, pad_y: int, pad_x: int) -> torch.Tensor:
        if pad_y or pad_x:  # no copy when the slices are already a multiple of the network's stride
            x = torch.nn.functional.pad(x, (0, pad_x, 0, pad_y))
        return x.contiguous(memory_format=torch.channels_last)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            return self.model(x).float()

    def sigmoid(self, logits: torch.Tensor, temperatures: np.ndarray | None) -> torch.Tensor:
        if temperatures is None:
            return torch.sigmoid(logits)
        return torch.sigmoid(logits / torch.as_tensor(temperatures, device=logits.device).reshape(1, 2, 1, 1))

    def to_host(self, x: torch.Tensor):
        # contiguous head-major on the device: channels_last outputs would leave the head axis innermost, slow to
        # threshold on the host
        x = x.permute(1, 0, 2, 3).contiguous()
        if x.device.type != "cuda":
            return x.cpu().numpy()  # a no-op move on the CPU
        # into pinned host memory without waiting (torch's host allocator recycles these buffers once the recorded
        # copy is done); `numpy` waits for this copy only, while the next batch runs on the device
        host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        host.copy_(x, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return host, done

    def numpy(self, handle) -> np.ndarray:
        if isinstance(handle, np.ndarray):
            return handle
        host, done = handle
        done.synchronize()
        return host.numpy()


def predict_batches(
    model: torch.nn.Module, image: np.ndarray, device: torch.device, batch_size: int = 16, amp: str = "auto", **settings
) -> Iterator[tuple[int, np.ndarray]]:
    """lits.infer.batches.predict_batches with `model` on `device` under `amp`."""
    return batches.predict_batches(TorchNetwork(model, device, amp), image, batch_size=batch_size, **settings)


def predict_volume(
    model: torch.nn.Module, image: np.ndarray, device: torch.device, batch_size: int = 16, amp: str = "auto", **settings
) -> np.ndarray:
    """lits.infer.batches.predict_volume (its docstring has the settings) with `model` on `device` under `amp`."""
    return batches.predict_volume(TorchNetwork(model, device, amp), image, batch_size=batch_size, **settings)


def predict_masks(
    model: torch.nn.Module,
    image: np.ndarray,
    device: torch.device,
    threshold: float,
    out_yx: tuple[int, int] | None = None,
    amp: str = "auto",
    **settings,
) -> MaskPrediction:
    """lits.infer.batches.predict_masks (its docstring has the settings) with `model` on `device` under `amp`."""
    return batches.predict_masks(TorchNetwork(model, device, amp), image, threshold, out_yx, **settings)
