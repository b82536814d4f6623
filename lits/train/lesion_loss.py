"""The lesion-wise term of the region loss: a Dice per connected component of the reference (blob loss).

Blob loss (Kofler et al., "blob loss: instance imbalance aware loss functions for semantic segmentation", IPMI 2023):
a whole-batch Dice is dominated by large lesions, so missing a 5 mm lesion beside a 50 mm mass barely moves it. The
blob term scores every reference component k of every sample on its own,

    blob_k = 1 - (2 sum(p g_k) + eps) / (sum(p m_k) + sum(g_k) + eps),   m_k = g_k or background,

where m_k masks out the *other* components (predicting them is not a false positive of k), and averages blob_k over
all components of the batch: a missed small component costs as much as a missed large one. Components are
8-connected in the 2D crop: scipy labels them on the CPU; on an accelerator max-pooling label propagation with
pointer jumping finds them on the device (one host sync per four rounds, none per pixel).

The blob term applies to the tumour channel (the liver is one component) and mixes with the channel's region term:
(1 - loss.blob_weight) * region + loss.blob_weight * blob (lits/train/loss.py).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

PROPAGATION_CHECK_EVERY = 4  # propagation rounds between convergence checks (each check is one host sync)
EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def component_labels(mask: torch.Tensor) -> torch.Tensor:
    """8-connected components of a (B, H, W) bool mask: (B, H, W) int64, 0 outside the mask and inside it a label in
    1 .. H*W shared by exactly the pixels of one component of one sample. On the CPU scipy labels each sample; on an
    accelerator `propagate_labels` does it there, without copying the batch to the host."""
    if mask.device.type != "cpu":
        return propagate_labels(mask)
    labels = np.stack([ndimage.label(m, structure=EIGHT_NEIGHBOURS)[0] for m in mask.numpy()])
    return torch.from_numpy(labels.astype(np.int64))


def propagate_labels(mask: torch.Tensor) -> torch.Tensor:
    """`component_labels` on the device: every foreground pixel starts with its flat index + 1; each round takes the
    maximum over its 3x3 neighbourhood (within the mask), then jumps to the label of the pixel its label names
    (pointer jumping: labels travel across a component in about log2(its length) rounds, not its length). At the
    fixed point every component carries its largest index + 1."""
    b, h, w = mask.shape
    fg = mask.unsqueeze(1)
    index = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).reshape(1, 1, h, w)
    labels = torch.where(fg, index.expand(b, 1, h, w), torch.zeros((), device=mask.device))
    while True:
        before = labels
        for _ in range(PROPAGATION_CHECK_EVERY):
            labels = torch.where(fg, F.max_pool2d(labels, 3, stride=1, padding=1), labels)
            flat = labels.reshape(b, h * w)
            jumped = flat.gather(1, (flat.long() - 1).clamp(min=0)).reshape(b, 1, h, w)
            labels = torch.where(fg, torch.maximum(labels, jumped), labels)
        if torch.equal(before, labels):
            return labels[:, 0].long()


def blob_dice(probability: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """The blob term (module docstring) of one channel: (B, H, W) probabilities and binary targets -> the mean over
    every reference component of the batch of its masked soft-Dice loss; 0 when the batch has no component."""
    b, h, w = target.shape
    labels = component_labels(target > 0.5).reshape(b, h * w)
    p = probability.reshape(b, h * w).float()
    g = target.reshape(b, h * w).float()
    slots = h * w + 1  # label 0 (background) and one slot per possible component label
    intersection = torch.zeros(b, slots, device=p.device).scatter_add_(1, labels, p * g)
    truth = torch.zeros(b, slots, device=p.device).scatter_add_(1, labels, g)
    on_component = torch.zeros(b, slots, device=p.device).scatter_add_(1, labels, p)
    background = (p * (labels == 0)).sum(dim=1, keepdim=True)  # false positives of every component of the sample
    exists = truth[:, 1:] > 0
    dice = 1.0 - (2.0 * intersection[:, 1:] + eps) / (on_component[:, 1:] + background + truth[:, 1:] + eps)
    count = exists.sum()
    return torch.where(exists, dice, torch.zeros_like(dice)).sum() / count.clamp(min=1)
