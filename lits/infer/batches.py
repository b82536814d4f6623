"""Whole-volume prediction, whichever runtime runs the network: slice batches through a 2D network, padded to its
size multiple, flipped for test-time augmentation, turned into probabilities and assembled or thresholded.

The runtime is a `SliceNetwork`: PyTorch (lits/infer/predictor.py: `TorchNetwork`, on any device) or onnxruntime
(lits/infer/onnx_network.py: `OnnxNetwork`, no torch). Both run this one loop, so a checkpoint and its exported
model preprocess, batch, average views, calibrate and threshold identically; only the forward pass differs.
This module imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from lits.data.context import context_batch
from lits.data.normalization import Normalization
from lits.data.resample import resize_inplane


class SliceNetwork(Protocol):
    """A 2D network on (N, C, Y, X) slice batches in its runtime's arrays (torch tensors on a device, numpy arrays)."""

    def inference(self):
        """Context manager around one batch's work (torch: inference mode)."""

    def to_batch(self, array: np.ndarray) -> Any:
        """A float32 numpy batch -> the runtime's array, where the network runs."""

    def flip(self, x: Any, dims: tuple[int, ...]) -> Any: ...

    def pad(self, x: Any, pad_y: int, pad_x: int) -> Any:
        """Zero rows at the bottom and columns at the right."""

    def logits(self, x: Any) -> Any:
        """The network's float32 logits (N, 2, Y, X)."""

    def sigmoid(self, logits: Any, temperatures: np.ndarray | None) -> Any:
        """sigmoid(logits / t), one temperature per output channel (None: 1 for both)."""

    def to_host(self, x: Any) -> Any:
        """Start moving (N, 2, Y, X) probabilities to the host, head-major (2, N, Y, X); returns a handle that
        `numpy` waits for (on a GPU the copy runs while the next batch is computed: no wait per batch)."""

    def numpy(self, handle: Any) -> np.ndarray:
        """The float32 numpy array of a `to_host` handle, once its copy is complete."""


def predict_batches(
    network: SliceNetwork,
    image: np.ndarray,
    batch_size: int = 16,
    size_multiple: int = 16,
    temperature: float | Sequence[float] = 1.0,
    flips: Sequence[tuple[int, ...]] = ((),),
    progress: bool = False,
    context_slices: int = 0,
    normalization: Normalization | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """(start, probabilities (2, n, Y, X) float32 of slices start .. start+n-1), one slice batch at a time: what
    `predict_volume` assembles, for callers that reduce every batch as it comes (`predict_masks`). The arguments are
    `predict_volume`'s. A batch is handed over once the next one is under way (one behind), so that on a GPU the host
    never waits for the device between batches."""
    if not flips:
        raise ValueError("predict_volume: flips must name at least one view, e.g. ((),) for the identity")
    temperatures = np.array(np.broadcast_to(np.asarray(temperature, np.float32), (2,)))  # one per head
    scale = None if np.all(temperatures == 1.0) else temperatures  # x / 1 is x: skip the pass
    z_count, height, width = image.shape
    pad_y, pad_x = -height % size_multiple, -width % size_multiple
    pending = None  # (start, handle) of the batch whose copy to the host is under way
    for start in tqdm(range(0, z_count, batch_size), desc="slices", unit="batch", leave=False, disable=not progress):
        stop = min(start + batch_size, z_count)
        with network.inference():
            batch = network.to_batch(context_batch(image, start, stop, context_slices))
            if normalization is not None:
                batch = normalization.apply(batch)
            total = None
            for dims in flips:
                view = network.flip(batch, dims) if dims else batch
                # pad after flipping so the padding stays bottom/right, where the crop below removes it
                logits = network.logits(network.pad(view, pad_y, pad_x))[:, :, :height, :width]
                out = network.sigmoid(logits, scale)
                out = network.flip(out, dims) if dims else out
                total = out if total is None else total + out
            if len(flips) > 1:
                total = total / len(flips)
            handle = network.to_host(total)
        if pending is not None:
            yield pending[0], network.numpy(pending[1])
        pending = (start, handle)
    if pending is not None:
        yield pending[0], network.numpy(pending[1])


def predict_volume(network: SliceNetwork, image: np.ndarray, **settings) -> np.ndarray:
    """Sigmoid probabilities (2, Z, Y, X) float32 (liver, tumour) for a (Z, Y, X) image in [0, 1].

    `batch_size` slices per forward pass, padded to `size_multiple` (the network's total stride). Reads the
    (possibly memory-mapped) image a batch of slices at a time; with `context_slices=k` each slice gets its k
    neighbours each side as channels, stacked as in training (lits.data.context.context_batch).
    `temperature` is the loss's sigmoid temperature, so probabilities mean at inference what they meant in
    training (one value, or one per output channel: the calibrated temperatures of the inference spec).
    `flips`: the views whose probabilities are averaged, as flip dims of the (N, C, Y, X) batch (`()` the identity);
    test-time augmentation passes `InferenceSpec.views(tta=True)`, the flips the network was trained with.
    `normalization` maps the [0, 1] window values to the network's input (the run's, from its checkpoint; None: the
    window as is).
    """
    probs = np.empty((2, *image.shape), dtype=np.float32)
    for start, batch in predict_batches(network, image, **settings):
        probs[:, start : start + batch.shape[1]] = batch
    return probs


def add_identity_view(flipped: np.ndarray, plain: np.ndarray, num_flips: int) -> np.ndarray:
    """The mean over the identity view and `num_flips` flipped ones, from the identity's probabilities `plain` and the
    flipped views' mean `flipped` (predicted apart, so that the identity alone is at hand too); `flipped` is
    overwritten and returned."""
    flipped *= num_flips / (num_flips + 1)
    flipped += plain / (num_flips + 1)
    return flipped


@dataclass
class MaskPrediction:
    """A volume's prediction reduced to what post-processing needs (lits.infer.postprocess.postprocess_masks)."""

    liver: np.ndarray  # (Z, Y, X) bool: liver probability > threshold
    tumor: np.ndarray  # (Z, Y, X) bool: tumour probability > threshold
    tumor_probability: np.ndarray | None  # (Z, Y, X) float32, when asked for (hysteresis)
    probabilities: np.ndarray | None  # (2, Z, Y, X) float32, when asked for (saved probability maps)


def predict_masks(
    network: SliceNetwork,
    image: np.ndarray,
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
    for start, batch in predict_batches(network, image, **settings):
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
