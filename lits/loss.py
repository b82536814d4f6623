"""HybridLoss = alpha * Dice + (1 - alpha) * BCE, and the alpha schedules (SEEDS.md: BCE -> hybrid -> Dice)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss

from lits.distributed import global_sum
from lits.errors import LitsError

DICE_REDUCTIONS = ("local", "global")


def alpha_at(epoch: int, schedule) -> float:
    """Weight of the Dice term at `epoch` (0-based).

    constant:    alpha
    progressive: 0 for epoch < bce_epochs (BCE warm-up);
                 min(hybrid_max, hybrid_start + hybrid_step * (epoch - bce_epochs)) until dice_epoch;
                 final_alpha from dice_epoch on (pure Dice by default; the article's code keeps 0.7).
    """
    if schedule.kind == "constant":
        return float(schedule.alpha)
    if schedule.kind == "progressive":
        if epoch < schedule.bce_epochs:
            return 0.0
        if epoch < schedule.dice_epoch:
            return float(min(schedule.hybrid_max, schedule.hybrid_start + schedule.hybrid_step * (epoch - schedule.bce_epochs)))
        return float(schedule.final_alpha)
    raise LitsError(f"loss.schedule.kind={schedule.kind}: unknown schedule; choose constant or progressive")


def targets_from_labels(label: torch.Tensor) -> torch.Tensor:
    """(B, H, W) labels {0,1,2} -> (B, 2, H, W) float targets: liver (>= 1) and tumour (== 2)."""
    return torch.stack([label >= 1, label == 2], dim=1).float()


class HybridLoss(torch.nn.Module):
    """alpha * soft Dice(sigmoid(logits / T), y) + (1 - alpha) * BCEWithLogits(logits / T, y).

    Both terms are computed in float32 even under autocast: the Dice sums over a batch are small
    differences of large numbers and lose too much in fp16.
    """

    def __init__(self, cfg):
        super().__init__()
        self.temperature = float(cfg.temperature)
        self.dice = DiceLoss(
            sigmoid=True,
            squared_pred=cfg.dice.squared,
            jaccard=cfg.dice.jaccard,
            batch=cfg.dice.batch,
            smooth_nr=cfg.dice.eps,
            smooth_dr=cfg.dice.eps,
        )
        self.channel_weights = torch.tensor(list(cfg.channel_weights), dtype=torch.float32)
        # local: MONAI DiceLoss on this process's batch; global: intersection and sums all-reduced over DDP ranks
        # before forming Dice (SEEDS.md), i.e. the Dice of the whole effective batch. Same value in one process.
        self.reduction = cfg.get("dice_reduction", "local") or "local"
        if self.reduction not in DICE_REDUCTIONS:
            raise LitsError(f"loss.dice_reduction={self.reduction}: choose local (per process) or global (all-reduced over ranks)")
        if self.reduction == "global" and not cfg.dice.batch:
            raise LitsError("loss.dice_reduction=global sums over the whole batch; it needs loss.dice.batch=true")
        self.squared, self.jaccard, self.eps = bool(cfg.dice.squared), bool(cfg.dice.jaccard), float(cfg.dice.eps)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, alpha: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = logits.float() / self.temperature
        target = target.float()
        weights = self.channel_weights.to(logits.device)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        bce = (bce.mean(dim=(0, 2, 3)) * weights).sum() / weights.sum()
        if self.reduction == "global":
            dice = self.global_dice(logits, target)
        else:
            dice = torch.stack([self.dice(logits[:, c : c + 1], target[:, c : c + 1]) for c in range(logits.shape[1])])
        dice = (dice * weights).sum() / weights.sum()
        total = alpha * dice + (1.0 - alpha) * bce
        return total, {"bce": bce.detach(), "dice": dice.detach()}

    def global_dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-channel soft Dice (or IoU) loss from batch sums all-reduced over ranks: MONAI DiceLoss's formula
        (batch=True): 1 - (2 I + eps) / (P + G + eps), I = sum p g, P = sum p (or p^2), G = sum g (or g^2);
        Jaccard: denominator 2 (P + G - I)."""
        p = torch.sigmoid(logits)
        dims = (0, 2, 3)
        power = 2 if self.squared else 1
        sums = torch.stack([(p * target).sum(dims), (p**power).sum(dims), (target**power).sum(dims)])  # (3, C)
        intersection, pred, truth = global_sum(sums)
        denominator = pred + truth
        if self.jaccard:
            denominator = 2.0 * (denominator - intersection)
        return 1.0 - (2.0 * intersection + self.eps) / (denominator + self.eps)
