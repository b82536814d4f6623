"""Deep supervision: the loss on the main output plus auxiliary outputs of coarser decoder levels (nnU-Net).

MONAI DynUNet in training mode returns (B, 1 + heads, C, H, W): the main output first, then the heads' outputs
upsampled to full resolution (nnU-Net instead downsamples the targets; the effect is the same: coarse levels are
pushed towards the segmentation early). Weights 1/2^k for level k, normalised to sum 1 (nnU-Net's, without zeroing
the coarsest head: MONAI's heads stop short of the bottleneck). In eval mode the network returns the main output only.
"""

from __future__ import annotations

import torch


def level_weights(levels: int) -> list[float]:
    raw = [0.5**k for k in range(levels)]
    return [w / sum(raw) for w in raw]


def supervised_loss(loss_fn, output: torch.Tensor, target: torch.Tensor, alpha: float) -> tuple[torch.Tensor, dict]:
    """loss_fn(logits, target, alpha) on a plain (B, C, H, W) output, or the weighted sum over a deep-supervision stack
    (B, L, C, H, W); the reported parts are the main output's."""
    if output.dim() == 4:
        return loss_fn(output, target, alpha)
    total, parts = None, None
    for level, weight in enumerate(level_weights(output.shape[1])):
        loss, level_parts = loss_fn(output[:, level], target, alpha)
        total = weight * loss if total is None else total + weight * loss
        if parts is None:
            parts = level_parts
    return total, parts
