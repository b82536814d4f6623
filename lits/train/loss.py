"""HybridLoss = alpha * region + (1 - alpha) * pixel, and the alpha schedules (progressive: BCE -> hybrid -> Dice).

The two terms are chosen in the loss config (`loss.region`, `loss.pixel`: lits/core/config/train.py), not by code forks:

* region (`loss.region`, weight alpha): `dice` soft Dice / IoU (MONAI DiceLoss, per channel) | `generalized_dice`
  (MONAI GeneralizedDiceLoss over both channels, class weights 1/(sum g)^2) | `log_dice` (-log(clamp(1 - Dice loss,
  loss.log_dice_floor)) per channel) | `tversky` (MONAI TverskyLoss per channel, false negatives weighted
  loss.tversky_beta). With `loss.blob_weight` w > 0 the tumour channel's region term is (1 - w) * region + w * blob,
  blob = a Dice per reference lesion (lits/train/lesion_loss.py).
* pixel (`loss.pixel`, weight 1 - alpha): `bce` BCEWithLogits | `focal` (MONAI FocalLoss, sigmoid, loss.focal_gamma).

total = loss.scale * (alpha * region + (1 - alpha) * pixel). With region=dice, pixel=bce, alpha=0.5, scale=2 and
dice.batch=false this is MONAI DiceCELoss(sigmoid=True) applied to each channel (experiment dice_ce;
tests/train/test_loss.py checks it). The defaults (dice, bce, scale 1) are the original hybrid loss, number for number.
"""

from __future__ import annotations

import torch
from monai.losses import DiceLoss, FocalLoss, GeneralizedDiceLoss, TverskyLoss

from lits.core.config import LossConfig, typed
from lits.core.errors import LitsError
from lits.train.distributed import global_sum
from lits.train.lesion_loss import blob_dice

TUMOUR_CHANNEL = 1  # the output channel whose lesions the blob term scores one by one (0 is the liver)


def alpha_at(epoch: int, schedule) -> float:
    """Weight of the region (Dice) term at `epoch` (0-based).

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
            return float(
                min(schedule.hybrid_max, schedule.hybrid_start + schedule.hybrid_step * (epoch - schedule.bce_epochs))
            )
        return float(schedule.final_alpha)
    raise LitsError(f"loss.schedule.kind={schedule.kind}: unknown schedule; choose constant or progressive")


def targets_from_labels(label: torch.Tensor) -> torch.Tensor:
    """(B, H, W) labels {0,1,2} -> (B, 2, H, W) float targets: liver (>= 1) and tumour (== 2)."""
    return torch.stack([label >= 1, label == 2], dim=1).float()


class WeightedGeneralizedDiceLoss(GeneralizedDiceLoss):
    """MONAI GeneralizedDiceLoss (w_type square) whose class weights 1/(sum g)^2 are also scaled by the channel weights
    (normalised to mean 1, so equal channel weights give MONAI's value exactly):

        1 - (2 sum_c w_c I_c + eps) / (sum_c w_c (P_c + G_c) + eps),   w_c = cw_c / G_c^2

    A channel without foreground (G_c = 0, cw_c > 0) takes the largest weight of the others, as in MONAI; cw_c = 0
    leaves channel c out.
    """

    def __init__(self, channel_weights: torch.Tensor, **kwargs):
        super().__init__(w_type="square", **kwargs)
        self.register_buffer("cw", channel_weights / channel_weights.mean(), persistent=False)

    def w_func(self, grnd: torch.Tensor) -> torch.Tensor:
        w = torch.reciprocal(grnd * grnd)  # MONAI's "square"; broadcasts over (C,) or (B, C)
        cw = self.cw.to(w)
        return torch.where(cw > 0, w * cw, torch.zeros_like(w))


class HybridLoss(torch.nn.Module):
    """scale * (alpha * region + (1 - alpha) * pixel) on logits / temperature (module docstring for the terms).

    forward(logits, target, alpha) -> (total, parts) for any (B, C, *spatial) logits and same-shape targets in [0, 1]
    (C = len(loss.channel_weights)). parts: "bce" = the pixel term and "dice" = the region term (the names the loop
    logs, train/bce and train/dice, whatever the variant), with aliases "pixel" and "region"; both unscaled,
    channel-weighted. Every term is computed in float32 with autocast off: the Dice sums over a batch are small
    differences of large numbers and lose too much in fp16.
    """

    def __init__(self, cfg: LossConfig):
        super().__init__()
        cfg = typed(LossConfig, cfg, "loss")  # validated there: choices, ranges, combinations
        self.temperature, self.region, self.pixel, self.scale = cfg.temperature, cfg.region, cfg.pixel, cfg.scale
        self.channel_weights = torch.tensor(cfg.channel_weights, dtype=torch.float32)
        dice = cfg.dice
        self.dice = DiceLoss(
            sigmoid=True,
            squared_pred=dice.squared,
            jaccard=dice.jaccard,
            batch=dice.batch,
            smooth_nr=dice.eps,
            smooth_dr=dice.eps,
        )
        if self.region == "tversky":
            beta = cfg.tversky_beta
            self.tversky = TverskyLoss(
                sigmoid=True, alpha=1.0 - beta, beta=beta, batch=dice.batch, smooth_nr=dice.eps, smooth_dr=dice.eps
            )
        self.blob_weight = cfg.blob_weight
        if self.region == "generalized_dice":
            self.generalized_dice = WeightedGeneralizedDiceLoss(
                self.channel_weights, sigmoid=True, batch=dice.batch, smooth_nr=dice.eps, smooth_dr=dice.eps
            )
        self.log_dice_floor, self.focal_gamma = cfg.log_dice_floor, cfg.focal_gamma
        if self.pixel == "focal":
            self.focal = FocalLoss(gamma=self.focal_gamma, use_softmax=False, reduction="none")
        # local: MONAI DiceLoss on this process's batch; global: intersection and sums all-reduced over DDP ranks
        # before forming Dice (the published multi-GPU recipe), i.e. the Dice of the whole effective batch
        self.reduction = cfg.dice_reduction
        self.squared, self.jaccard, self.eps = dice.squared, dice.jaccard, dice.eps

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, alpha: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.autocast(logits.device.type, enabled=False):
            logits = logits.float() / self.temperature
            target = target.float()
            weights = self.channel_weights.to(logits.device)
            if logits.shape[1] != len(weights):
                raise LitsError(
                    f"loss.channel_weights has {len(weights)} entries but the logits have {logits.shape[1]} "
                    "channels; give one weight per output channel"
                )
            pixel = (self.pixel_terms(logits, target) * weights).sum() / weights.sum()
            if self.region == "generalized_dice":
                region = self.generalized_dice(logits, target)  # channel weights act inside, on the class weights
            else:
                region = (self.region_terms(logits, target) * weights).sum() / weights.sum()
            total = alpha * region + (1.0 - alpha) * pixel
            if self.scale != 1.0:
                total = self.scale * total
        pixel, region = pixel.detach(), region.detach()
        return total, {"bce": pixel, "dice": region, "pixel": pixel, "region": region}

    def region_terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-channel region loss (dice, log_dice or tversky), the tumour channel's mixed with the blob term: (C,)."""
        if self.reduction == "global":
            terms = self.global_dice(logits, target)
        else:
            term = self.tversky if self.region == "tversky" else self.dice
            terms = torch.stack([term(logits[:, c : c + 1], target[:, c : c + 1]) for c in range(logits.shape[1])])
        if self.region == "log_dice":
            terms = -torch.log(torch.clamp(1.0 - terms, min=self.log_dice_floor))
        if self.blob_weight > 0 and logits.shape[1] > TUMOUR_CHANNEL:
            c, w = TUMOUR_CHANNEL, self.blob_weight
            blob = blob_dice(torch.sigmoid(logits[:, c]), target[:, c], self.eps)
            terms = torch.cat([terms[:c], ((1.0 - w) * terms[c] + w * blob)[None], terms[c + 1 :]])
        return terms

    def pixel_terms(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-channel mean over batch and pixels of BCEWithLogits or sigmoid focal loss: shape (C,)."""
        if self.pixel == "focal":
            per_pixel = self.focal(logits, target)
        else:
            per_pixel = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return per_pixel.mean(dim=(0, *range(2, logits.ndim)))

    def global_dice(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-channel soft Dice (or IoU) loss from batch sums all-reduced over ranks: MONAI DiceLoss's formula
        (batch=True): 1 - (2 I + eps) / (P + G + eps), I = sum p g, P = sum p (or p^2), G = sum g (or g^2);
        Jaccard: denominator 2 (P + G - I)."""
        p = torch.sigmoid(logits)
        dims = (0, *range(2, logits.ndim))
        power = 2 if self.squared else 1
        sums = torch.stack([(p * target).sum(dims), (p**power).sum(dims), (target**power).sum(dims)])  # (3, C)
        intersection, pred, truth = global_sum(sums)
        denominator = pred + truth
        if self.jaccard:
            denominator = 2.0 * (denominator - intersection)
        return 1.0 - (2.0 * intersection + self.eps) / (denominator + self.eps)
