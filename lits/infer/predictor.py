"""Whole-volume prediction: slice batches through the 2D network, padded to the network's size multiple.

Also what every inference stage (evaluate, predict) needs first: the model rebuilt from a checkpoint alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from lits.core.device import autocast
from lits.data.context import context_batch
from lits.data.normalization import Normalization

# Flip test-time augmentation: identity, horizontal (X), vertical (Y) flips of each (N, 1, Y, X) slice batch.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,))


@torch.inference_mode()
def predict_volume(
    model: torch.nn.Module,
    image: np.ndarray,
    device: torch.device,
    batch_size: int = 16,
    amp: str = "auto",
    size_multiple: int = 16,
    temperature: float | Sequence[float] = 1.0,
    tta: bool = False,
    flips: Sequence[tuple[int, ...]] | None = None,
    progress: bool = False,
    context_slices: int = 0,
    normalization: Normalization | None = None,
) -> np.ndarray:
    """Sigmoid probabilities (2, Z, Y, X) float32 (liver, tumour) for a (Z, Y, X) image in [0, 1].

    Reads the (possibly memory-mapped) image a batch of slices at a time; with `context_slices=k` each slice
    gets its k neighbours each side as channels, stacked as in training (lits.data.slices.context_batch).
    `temperature` is the loss's sigmoid temperature, so probabilities mean at inference what they meant in
    training (one value, or one per output channel: the calibrated temperatures of the inference spec).
    `tta=True` averages the probabilities of the identity and the horizontal and vertical flips
    (TTA_FLIPS); `flips` picks the views explicitly (evaluate.py predicts the identity and the two flips
    separately to report both). `normalization` maps the [0, 1] window values to the network's input (the run's,
    from its checkpoint; None: the window as is).
    """
    if flips is None:
        flips = TTA_FLIPS if tta else ((),)
    if not flips:
        raise ValueError("predict_volume: flips must name at least one view, e.g. ((),) for the identity")
    model.eval()
    scale = torch.as_tensor(temperature, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)
    z_count, height, width = image.shape
    pad_y, pad_x = -height % size_multiple, -width % size_multiple
    probs = np.empty((2, z_count, height, width), dtype=np.float32)
    starts = range(0, z_count, batch_size)
    for start in tqdm(starts, desc="slices", unit="batch", leave=False, disable=not progress):
        stop = min(start + batch_size, z_count)
        batch = torch.from_numpy(context_batch(image, start, stop, context_slices)).to(device, non_blocking=True)
        if normalization is not None:
            batch = normalization.apply(batch)
        total = None
        for dims in flips:
            view = torch.flip(batch, dims) if dims else batch
            # pad after flipping so the padding stays bottom/right, where the crop below removes it
            view = torch.nn.functional.pad(view, (0, pad_x, 0, pad_y)).contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                logits = model(view)
            out = torch.sigmoid(logits.float() / scale)[:, :, :height, :width]
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        probs[:, start : start + len(batch)] = (total / len(flips)).permute(1, 0, 2, 3).cpu().numpy()
    return probs
