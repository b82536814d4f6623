"""HybridLoss endpoints and the alpha schedules."""

import pytest
import torch
from conftest import REPO, compose_train
from monai.losses import DiceLoss
from omegaconf import OmegaConf

from lits.train.loss import HybridLoss, alpha_at, targets_from_labels

REPO_LOSS = compose_train().loss  # the loss group as configs/ composes it


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 2, 16, 16, generator=g)
    label = torch.randint(0, 3, (4, 16, 16), generator=g)
    return logits, targets_from_labels(label)


def test_alpha_zero_is_bce_and_one_is_dice():
    loss = HybridLoss(REPO_LOSS)
    logits, target = batch()
    bce, _ = loss(logits, target, 0.0)
    assert bce.item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6
    )
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
    per_channel = [
        1 - (2 * (p[:, c] * target[:, c]).sum() + eps) / (p[:, c].sum() + target[:, c].sum() + eps) for c in range(2)
    ]
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


# ---------------------------------------------------------------------------------------------- loss variants
from monai.losses import DiceCELoss, FocalLoss, GeneralizedDiceLoss  # noqa: E402

from lits.core.errors import LitsError  # noqa: E402

NEW_EXPERIMENTS = ("focal", "generalized_dice", "log_dice", "dice_ce")
VARIANTS = [
    {"region": r, "pixel": p} for r in ("dice", "generalized_dice", "log_dice", "tversky") for p in ("bce", "focal")
] + [{"region": r, "pixel": "bce", "blob_weight": 0.5} for r in ("dice", "tversky")]


def variant(**changes):
    return OmegaConf.merge(REPO_LOSS, changes)


def experiment_loss(name):
    return compose_train(f"experiment={name}").loss


def test_defaults_are_dice_and_bce_with_aliases():
    assert (REPO_LOSS.region, REPO_LOSS.pixel, REPO_LOSS.scale) == ("dice", "bce", 1.0)
    logits, target = batch(2)
    total, parts = HybridLoss(REPO_LOSS)(logits, target, 0.4)
    old_style = HybridLoss(
        OmegaConf.masked_copy(REPO_LOSS, ["temperature", "channel_weights", "dice", "dice_reduction", "schedule"])
    )
    assert total.item() == old_style(logits, target, 0.4)[0].item()  # a config without the new keys: same numbers
    assert parts["pixel"] is parts["bce"] and parts["region"] is parts["dice"]


@pytest.mark.parametrize("gamma", [0.0, 2.0, 3.5])
def test_focal_is_monai_focal_loss(gamma):
    loss = HybridLoss(variant(pixel="focal", focal_gamma=gamma))
    logits, target = batch(3)
    value, parts = loss(logits, target, 0.0)
    expected = FocalLoss(gamma=gamma, use_softmax=False)(
        logits, target
    )  # mean over every element = mean of channel means
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["bce"].item() == pytest.approx(expected.item(), rel=1e-6)
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    hand = (
        (1 - p_t) ** gamma * torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    ).mean()
    assert value.item() == pytest.approx(hand.item(), rel=1e-5)
    if gamma == 0.0:
        assert value.item() == pytest.approx(
            torch.nn.functional.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6
        )


@pytest.mark.parametrize("batch_sums", [True, False])
def test_generalized_dice_is_monai_generalized_dice(batch_sums):
    loss = HybridLoss(variant(region="generalized_dice", dice={"batch": batch_sums}))
    logits, target = batch(4)
    target[1, 1] = 0  # one sample without tumour: MONAI's empty-class weight rule
    value, parts = loss(logits, target, 1.0)
    expected = GeneralizedDiceLoss(sigmoid=True, batch=batch_sums, smooth_nr=1e-5, smooth_dr=1e-5)(logits, target)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["dice"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_generalized_dice_channel_weights_scale_the_class_weights():
    loss = HybridLoss(variant(region="generalized_dice", channel_weights=[1.0, 3.0]))
    logits, target = batch(5)
    p, eps, dims = torch.sigmoid(logits), 1e-5, (0, 2, 3)
    w = torch.tensor([0.5, 1.5]) / target.sum(dims) ** 2  # channel weights normalised to mean 1
    intersection, sums = (p * target).sum(dims), p.sum(dims) + target.sum(dims)
    hand = 1 - (2 * (w * intersection).sum() + eps) / ((w * sums).sum() + eps)
    assert loss(logits, target, 1.0)[0].item() == pytest.approx(hand.item(), rel=1e-5)


@pytest.mark.parametrize("batch_sums", [True, False])
def test_log_dice_matches_formula(batch_sums):
    loss = HybridLoss(variant(region="log_dice", dice={"batch": batch_sums}))
    logits, target = batch(6)
    reference = DiceLoss(sigmoid=True, batch=batch_sums, smooth_nr=1e-5, smooth_dr=1e-5)
    per_channel = [
        -torch.log(torch.clamp(1 - reference(logits[:, c : c + 1], target[:, c : c + 1]), min=0.01)) for c in range(2)
    ]
    assert loss(logits, target, 1.0)[0].item() == pytest.approx(float(sum(per_channel) / 2), rel=1e-6)
    wrong = (1 - 2 * target) * 20  # confidently wrong everywhere: Dice ~ 0, clamped to the floor
    assert loss(wrong, target, 1.0)[0].item() == pytest.approx(-torch.log(torch.tensor(0.01)).item(), rel=1e-4)
    assert HybridLoss(variant(region="log_dice", log_dice_floor=0.1))(wrong, target, 1.0)[0].item() == pytest.approx(
        -torch.log(torch.tensor(0.1)).item(), rel=1e-4
    )


def test_dice_ce_experiment_is_monai_dice_ce_per_channel():
    """experiment=dice_ce's loss (composed from the configs as training does) equals MONAI DiceCELoss(sigmoid=True) with
    its defaults on each channel, averaged: per-sample Dice + BCE, 1:1. (On a 2-channel input MONAI would use softmax
    cross-entropy, which treats liver and tumour as exclusive classes; ours overlap.)"""
    from lits.train.loss import alpha_at

    cfg = experiment_loss("dice_ce")
    loss = HybridLoss(cfg)
    reference = DiceCELoss(sigmoid=True)
    for seed in range(3):
        logits, target = batch(10 + seed)
        logits = logits * 3
        for epoch in (0, 7, 29):  # constant schedule
            value, _ = loss(logits, target, alpha_at(epoch, cfg.schedule))
            expected = sum(reference(logits[:, c : c + 1], target[:, c : c + 1]) for c in range(2)) / 2
            assert value.item() == pytest.approx(expected.item(), rel=1e-6)


def test_new_experiments_change_only_loss_and_name():
    for name in NEW_EXPERIMENTS:
        raw = OmegaConf.load(REPO / f"configs/experiment/{name}.yaml")
        assert set(raw) == {"name", "loss"} and raw.name == name
    expected = {
        "focal": ("dice", "focal", 0.0),
        "generalized_dice": ("generalized_dice", "bce", 1.0),
        "log_dice": ("log_dice", "bce", 1.0),
        "dice_ce": ("dice", "bce", 0.5),
    }
    for name, (region, pixel, alpha) in expected.items():
        cfg = experiment_loss(name)
        assert (cfg.region, cfg.pixel, cfg.schedule.kind, cfg.schedule.alpha) == (region, pixel, "constant", alpha)
        HybridLoss(cfg)


@pytest.mark.parametrize(
    "config",
    VARIANTS
    + [
        {"dice_reduction": "global"},
        {"dice": {"squared": True}},
        {"dice": {"jaccard": True}},
        {"region": "log_dice", "dice": {"batch": False, "squared": True}},
    ],
)
def test_every_variant_has_finite_gradients_at_every_scale(config):
    loss = HybridLoss(variant(**config, temperature=2.0, channel_weights=[1.0, 2.0]))
    for size, seed in ((16, 0), (8, 1), (4, 2)):  # deep supervision calls the loss at coarser scales
        logits, target = batch(seed)
        logits = torch.nn.functional.interpolate(logits, size=size).requires_grad_()
        target = torch.nn.functional.interpolate(target, size=size)
        target[0] = 0  # a sample with nothing: empty-class rules
        target[:, 1] = 0 if seed == 2 else target[:, 1]  # a batch without tumour
        for alpha in (0.0, 0.5, 1.0):
            value, parts = loss(logits, target, alpha)
            (grad,) = torch.autograd.grad(value, logits)
            assert torch.isfinite(value) and torch.isfinite(grad).all() and grad.abs().sum() > 0
            assert torch.isfinite(parts["bce"]) and torch.isfinite(parts["dice"])


@pytest.mark.parametrize("config", VARIANTS)
def test_temperature_and_autocast_apply_to_every_variant(config):
    logits, target = batch(7)
    hot = HybridLoss(variant(**config, temperature=2.0))(logits, target, 0.5)[0]
    assert hot.item() == pytest.approx(HybridLoss(variant(**config))(logits / 2, target, 0.5)[0].item(), rel=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value, parts = HybridLoss(variant(**config))(logits.bfloat16(), target, 0.5)
    assert value.dtype == parts["dice"].dtype == parts["bce"].dtype == torch.float32
    assert value.item() == pytest.approx(
        HybridLoss(variant(**config))(logits.bfloat16().float(), target, 0.5)[0].item(), rel=1e-6
    )


def test_channel_weights_apply_to_pixel_and_region_terms():
    logits, target = batch(8)
    for config in VARIANTS:
        if config["region"] == "generalized_dice":
            continue  # weights act inside its class weights (test above)
        liver_only = HybridLoss(variant(**config, channel_weights=[1.0, 0.0]))
        single = HybridLoss(variant(**config, channel_weights=[1.0]))
        for alpha in (0.0, 1.0):
            assert liver_only(logits, target, alpha)[0].item() == pytest.approx(
                single(logits[:, :1], target[:, :1], alpha)[0].item(), rel=1e-6
            )


def test_scale_multiplies_the_total_only():
    logits, target = batch(9)
    one, parts_one = HybridLoss(REPO_LOSS)(logits, target, 0.3)
    two, parts_two = HybridLoss(variant(scale=2.0))(logits, target, 0.3)
    assert two.item() == pytest.approx(2 * one.item(), rel=1e-6)
    assert parts_two["dice"].item() == parts_one["dice"].item() and parts_two["bce"].item() == parts_one["bce"].item()


@pytest.mark.parametrize(
    "config, key",
    [
        ({"region": "hausdorff"}, "loss.region=hausdorff"),
        ({"region": "log_dice", "blob_weight": 0.5}, "loss.blob_weight=0.5"),
        ({"blob_weight": 1.5}, "loss.blob_weight=1.5"),
        ({"region": "tversky", "tversky_beta": 1.2}, "loss.tversky_beta=1.2"),
        ({"pixel": "hinge"}, "loss.pixel=hinge"),
        ({"region": "generalized_dice", "dice_reduction": "global"}, "loss.dice_reduction=global"),
        ({"region": "log_dice", "dice_reduction": "global"}, "loss.dice_reduction=global"),
        ({"region": "generalized_dice", "dice": {"squared": True}}, "loss.region=generalized_dice"),
        ({"region": "log_dice", "log_dice_floor": 0.0}, "loss.log_dice_floor=0.0"),
        ({"pixel": "focal", "focal_gamma": -1.0}, "loss.focal_gamma=-1.0"),
        ({"scale": 0.0}, "loss.scale=0.0"),
        ({"channel_weights": [0.0, 0.0]}, "loss.channel_weights"),
    ],
)
def test_bad_settings_raise_one_line_errors_naming_the_key(config, key):
    with pytest.raises(LitsError) as info:
        HybridLoss(variant(**config))
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message
