"""Whole-volume prediction: slice batches through the 2D network, padded to the network's size multiple.

Also what every inference stage (evaluate, predict) needs first: the model rebuilt from a checkpoint alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from lits.core.device import autocast
from lits.data.context import context_batch
from lits.data.normalization import Normalization
from lits.data.resample import resize_inplane


@torch.inference_mode()
def predict_batches(
    model: torch.nn.Module,
    image: np.ndarray,
    device: torch.device,
    batch_size: int = 16,
    amp: str = "auto",
    size_multiple: int = 16,
    temperature: float | Sequence[float] = 1.0,
    flips: Sequence[tuple[int, ...]] = ((),),
    progress: bool = False,
    context_slices: int = 0,
    normalization: Normalization | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, probabilities (2, n, Y, X) float32 of slices start .. start+n-1), one slice batch at a time: what
    `predict_volume` assembles, for callers that reduce every batch as it comes (`predict_masks`). The arguments are
    `predict_volume`'s."""
    if not flips:
        raise ValueError("predict_volume: flips must name at least one view, e.g. ((),) for the identity")
    model.eval()
    temperatures = np.array(np.broadcast_to(np.asarray(temperature, np.float32), (2,)))  # one per head
    scale = None if np.all(temperatures == 1.0) else torch.as_tensor(temperatures, device=device).reshape(1, 2, 1, 1)
    z_count, height, width = image.shape
    pad_y, pad_x = -height % size_multiple, -width % size_multiple
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
            logits = logits.float()[:, :, :height, :width]
            out = torch.sigmoid(logits if scale is None else logits / scale)  # x / 1 is x: skip the pass
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        if len(flips) > 1:
            total /= len(flips)
        yield start, total.permute(1, 0, 2, 3).cpu().numpy()


def predict_volume(
    model: torch.nn.Module,
    image: np.ndarray,
    device: torch.device,
    batch_size: int = 16,
    amp: str = "auto",
    size_multiple: int = 16,
    temperature: float | Sequence[float] = 1.0,
    flips: Sequence[tuple[int, ...]] = ((),),
    progress: bool = False,
    context_slices: int = 0,
    normalization: Normalization | None = None,
) -> np.ndarray:
    """Sigmoid probabilities (2, Z, Y, X) float32 (liver, tumour) for a (Z, Y, X) image in [0, 1].

    `batch_size` slices per forward pass, padded to `size_multiple` (the network's total stride). Reads the
    (possibly memory-mapped) image a batch of slices at a time; with `context_slices=k` each slice gets its k
    neighbours each side as channels, stacked as in training (lits.data.context.context_batch).
    `temperature` is the loss's sigmoid temperature, so probabilities mean at inference what they meant in
    training (one value, or one per output channel: the calibrated temperatures of the inference spec).
    `flips`: the views whose probabilities are averaged, as flip dims of the (N, C, Y, X) batch (`()` the identity);
    test-time augmentation passes `InferenceSpec.views(tta=True)`, the flips the network was trained with.
    `normalization` maps the [0, 1] window values to the network's input (the run's,
    from its checkpoint; None: the window as is).
    """
    settings = dict(batch_size=batch_size, amp=amp, size_multiple=size_multiple, temperature=temperature)
    settings.update(flips=flips, progress=progress, context_slices=context_slices, normalization=normalization)
    probs = np.empty((2, *image.shape), dtype=np.float32)
    for start, batch in predict_batches(model, image, device, **settings):
        probs[:, start : start + batch.shape[1]] = batch
    return probs


@dataclass
class MaskPrediction:
    """A volume's prediction reduced to what post-processing needs (lits.infer.postprocess.postprocess_masks)."""

    liver: np.ndarray  # (Z, Y, X) bool: liver probability > threshold
    tumor: np.ndarray  # (Z, Y, X) bool: tumour probability > threshold
    tumor_probability: np.ndarray | None  # (Z, Y, X) float32, when asked for (hysteresis)
    probabilities: np.ndarray | None  # (2, Z, Y, X) float32, when asked for (saved probability maps)


def predict_masks(
    model: torch.nn.Module,
    image: np.ndarray,
    device: torch.device,
    threshold: float,
    out_yx: tuple[int, int] | None = None,
    tumor_probability: bool = False,
    probabilities: bool = False,
    tumor_threshold: float | None = None,
    **settings,
) -> MaskPrediction:
    """`predict_volume` thresholded batch by batch: two bool masks (2 bytes per voxel) instead of the float32
    probabilities (8 bytes), so a 1000-slice CT never holds whole probability volumes unless asked to.

    `tumor_threshold`: the tumour head's own threshold (None: `threshold`).
    `out_yx`: the native in-plane size when the image was resampled (`data.target_spacing_xy`): each batch is mapped
    back with `resize_inplane` first, slice by slice as on the whole volume, so the masks equal thresholding
    `resize_inplane(predict_volume(...))`. `tumor_probability` / `probabilities` also keep those (on the out grid).
    """
    z_count, height, width = image.shape
    out_yx = tuple(out_yx or (height, width))
    liver = np.empty((z_count, *out_yx), dtype=bool)
    tumor = np.empty((z_count, *out_yx), dtype=bool)
    kept_tumor = np.empty((z_count, *out_yx), dtype=np.float32) if tumor_probability else None
    kept = np.empty((2, z_count, *out_yx), dtype=np.float32) if probabilities else None
    for start, batch in predict_batches(model, image, device, **settings):
        stop = start + batch.shape[1]
        if out_yx != (height, width):
            batch = resize_inplane(batch, out_yx, order=1)
        np.greater(batch[0], threshold, out=liver[start:stop])
        np.greater(batch[1], threshold if tumor_threshold is None else tumor_threshold, out=tumor[start:stop])
        if kept_tumor is not None:
            kept_tumor[start:stop] = batch[1]
        if kept is not None:
            kept[:, start:stop] = batch
    return MaskPrediction(liver, tumor, kept_tumor, kept)
