"""HybridLoss endpoints and the alpha schedules."""

import pytest
import torch
from monai.losses import DiceLoss
from omegaconf import OmegaConf

from conftest import REPO
from lits.loss import HybridLoss, alpha_at, targets_from_labels

REPO_LOSS = OmegaConf.load(REPO / "configs/loss/hybrid.yaml")


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 2, 16, 16, generator=g)
    label = torch.randint(0, 3, (4, 16, 16), generator=g)
    return logits, targets_from_labels(label)


def test_alpha_zero_is_bce_and_one_is_dice():
    loss = HybridLoss(REPO_LOSS)
    logits, target = batch()
    bce, _ = loss(logits, target, 0.0)
    assert bce.item() == pytest.approx(torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6)
    dice, _ = loss(logits, target, 1.0)
    reference = DiceLoss(sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    expected = (reference(logits[:, :1], target[:, :1]) + reference(logits[:, 1:], target[:, 1:])) / 2
    assert dice.item() == pytest.approx(expected.item(), rel=1e-6)
    mix, parts = loss(logits, target, 0.3)
    assert mix.item() == pytest.approx(0.3 * parts["dice"].item() + 0.7 * parts["bce"].item(), rel=1e-6)


def test_soft_dice_matches_formula():
    """1 - (2 sum(p g) + eps) / (sum p + sum g + eps), whole-batch sums, averaged over the two channels."""
    loss = HybridLoss(REPO_LOSS)
    logits, target = batch(1)
    p = torch.sigmoid(logits)
    eps = 1e-5
    per_channel = [1 - (2 * (p[:, c] * target[:, c]).sum() + eps) / (p[:, c].sum() + target[:, c].sum() + eps) for c in range(2)]
    assert loss(logits, target, 1.0)[0].item() == pytest.approx(float(sum(per_channel) / 2), rel=1e-5)


def test_loss_is_float32_under_autocast():
    loss = HybridLoss(REPO_LOSS)
    logits, target = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value, _ = loss(logits.bfloat16(), target, 0.5)
    assert value.dtype == torch.float32


def test_targets_from_labels():
    label = torch.tensor([[[0, 1, 2]]])
    assert targets_from_labels(label)[0, :, 0].tolist() == [[0, 1, 1], [0, 0, 1]]


@pytest.mark.parametrize("epoch, alpha", [(0, 0.0), (4, 0.0), (5, 0.3), (10, 0.5), (14, 0.66), (15, 1.0), (29, 1.0)])
def test_progressive_schedule(epoch, alpha):
    assert alpha_at(epoch, REPO_LOSS.schedule) == pytest.approx(alpha)


def test_progressive_final_alpha_and_cap_are_knobs():
    schedule = OmegaConf.merge(REPO_LOSS.schedule, {"final_alpha": 0.7, "dice_epoch": 30})
    assert alpha_at(29, schedule) == pytest.approx(0.7)  # capped at hybrid_max while hybrid runs on
    assert alpha_at(30, schedule) == pytest.approx(0.7)
    assert alpha_at(7, OmegaConf.merge(REPO_LOSS.schedule, {"kind": "constant", "alpha": 0.25})) == 0.25
