"""The lesion-wise loss terms on hand-made cases: components, the blob term's values, Tversky."""

import pytest
import torch
from conftest import compose_train
from monai.losses import TverskyLoss
from omegaconf import OmegaConf
from scipy import ndimage

from lits.train.lesion_loss import blob_dice, component_labels, propagate_labels
from lits.train.loss import HybridLoss

SURE = 30.0  # a logit whose sigmoid is 1 or 0 to float precision


def tumour_only(**changes):
    """The repository's loss with only the tumour channel weighted, so the region term is the tumour's."""
    return HybridLoss(OmegaConf.merge(compose_train().loss, {"channel_weights": [0.0, 1.0], **changes}))


def two_lesions() -> torch.Tensor:
    """One 32x32 crop: a 10 x 10 lesion (100 px) and a 2 x 2 lesion (4 px), apart."""
    target = torch.zeros(1, 32, 32)
    target[0, 2:12, 2:12] = 1
    target[0, 25:27, 25:27] = 1
    return target


def logits_of(mask: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) logits predicting `mask` as tumour (and liver) with certainty."""
    one = torch.where(mask > 0, SURE, -SURE)
    return torch.stack([one, one], dim=1)


def test_components_are_8_connected_and_per_sample():
    mask = torch.zeros(2, 12, 12, dtype=torch.bool)
    mask[0, 1:4, 1:4] = True
    mask[0, 4, 4] = True  # touches the square at a corner only: same component (8-connected)
    mask[0, 8:11, 1] = True  # a snake ...
    mask[0, 10, 1:10] = True
    mask[0, 1:11, 9] = True  # ... and a long arm: propagation needs many rounds
    mask[1, 1:4, 1:4] = True  # the same pixels in sample 1: another component
    for labels in (component_labels(mask), propagate_labels(mask)):  # scipy on the CPU, the device's way
        check_components(mask, labels)


def check_components(mask, labels):
    for b in range(2):
        expected, count = ndimage.label(mask[b].numpy(), structure=[[1, 1, 1]] * 3)
        ours = labels[b].numpy()
        assert len(set(ours[mask[b].numpy()].tolist())) == count
        for k in range(1, count + 1):  # each reference component is exactly one of ours
            assert len(set(ours[expected == k].tolist())) == 1
    assert (labels[~mask] == 0).all()


def test_blob_term_of_a_missed_small_lesion_is_half_the_mean():
    target = two_lesions()
    found_big = torch.zeros_like(target)
    found_big[0, 2:12, 2:12] = 1
    both = blob_dice(target, target, eps=1e-5)
    missed = blob_dice(found_big, target, eps=1e-5)
    assert both.item() == pytest.approx(0.0, abs=1e-6)
    assert missed.item() == pytest.approx((0.0 + 1 - 1e-5 / (4 + 1e-5)) / 2, abs=1e-7)  # big: 0; small: ~1


def test_blob_term_counts_background_false_positives_against_every_lesion_but_not_the_other_lesion():
    target = two_lesions()
    prediction = target.clone()
    prediction[0, 20:22, 2:4] = 1  # a 4-pixel false positive in the background
    value = blob_dice(prediction, target, eps=0.0).item()
    big = 1 - 200 / (100 + 4 + 100)  # its own 100 px + the false positive; the small lesion is not counted against it
    small = 1 - 8 / (4 + 4 + 4)
    assert value == pytest.approx((big + small) / 2, rel=1e-6)


def test_missed_small_lesion_raises_the_loss_by_the_stated_amount():
    """Batch soft Dice barely sees a missed 4 px lesion beside a 100 px one (0.0196); with blob_weight w the tumour
    region term becomes (1 - w) * 0.0196 + w * 0.5."""
    target = two_lesions()
    found_big = torch.zeros_like(target)
    found_big[0, 2:12, 2:12] = 1
    targets = torch.stack([target, target], dim=1)
    dice_missed = 1 - 200 / (100 + 104)
    for w in (0.0, 0.5, 1.0):
        loss = tumour_only(blob_weight=w)
        perfect = loss(logits_of(target), targets, 1.0)[0].item()
        missed = loss(logits_of(found_big), targets, 1.0)[0].item()
        assert perfect == pytest.approx(0.0, abs=1e-5)
        assert missed - perfect == pytest.approx((1 - w) * dice_missed + w * 0.5, abs=1e-4)


def test_blob_term_without_lesions_is_zero_and_differentiable():
    logits = torch.randn(2, 2, 16, 16, requires_grad=True)
    target = torch.zeros(2, 2, 16, 16)
    assert blob_dice(torch.sigmoid(logits[:, 1]), target[:, 1], 1e-5).item() == 0.0
    value, _ = tumour_only(blob_weight=0.5)(logits, target, 1.0)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("beta", [0.3, 0.5, 0.7, 0.9])
def test_tversky_is_monai_tversky_and_half_is_the_soft_dice(beta):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 2, 16, 16, generator=g)
    targets = (torch.rand(3, 1, 16, 16, generator=g) > 0.7).float().expand(3, 2, 16, 16)
    loss = tumour_only(region="tversky", tversky_beta=beta)(logits, targets, 1.0)[0].item()
    reference = TverskyLoss(sigmoid=True, alpha=1 - beta, beta=beta, batch=True)(logits[:, 1:], targets[:, 1:])
    assert loss == pytest.approx(reference.item(), rel=1e-5)
    if beta == 0.5:
        assert loss == pytest.approx(tumour_only()(logits, targets, 1.0)[0].item(), rel=1e-5)


def test_tversky_beta_above_half_costs_missed_tumour_more_than_false_tumour():
    target = two_lesions()
    half_missed = target.clone()
    half_missed[0, 2:7, 2:12] = 0  # 50 of the big lesion's 100 px missed
    over = target.clone()
    over[0, 12:17, 2:12] = 1  # 50 false pixels next to it
    targets = torch.stack([target, target], dim=1)
    loss = tumour_only(region="tversky", tversky_beta=0.8)
    fn_cost = loss(logits_of(half_missed), targets, 1.0)[0].item()
    fp_cost = loss(logits_of(over), targets, 1.0)[0].item()
    assert fn_cost == pytest.approx(1 - 54 / (54 + 0.8 * 50), abs=1e-4)
    assert fp_cost == pytest.approx(1 - 104 / (104 + 0.2 * 50), abs=1e-4)
    assert fn_cost > 3 * fp_cost
