"""Tests for lits.data.augment (batched, on-device augmentation)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lits.data.augment import AugmentConfig, AugmentParams, BatchAugment
from lits.errors import LitsError

OFF = dict(p_rotate=0.0, p_elastic=0.0, p_intensity=0.0)


def aug(**kw) -> BatchAugment:
    return BatchAugment(AugmentConfig(**kw))


def blobs(b: int = 4, h: int = 64, w: int = 64, seed: int = 0, margin: int = 12) -> torch.Tensor:
    """(B, H, W) int64 labels {0,1,2}: a liver ellipse with a tumour disc inside, away from the edges."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    out = torch.zeros(b, h, w, dtype=torch.int64)
    for i in range(b):
        cy = h / 2 + (torch.rand(1, generator=g).item() - 0.5) * 6
        cx = w / 2 + (torch.rand(1, generator=g).item() - 0.5) * 6
        ry, rx = h / 2 - margin, w / 2 - margin - 4
        liver = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        tumour = (yy - cy - 3) ** 2 + (xx - cx + 4) ** 2 <= (min(h, w) / 8) ** 2
        out[i][liver] = 1
        out[i][tumour & liver] = 2
    return out


def params(b: int, **kw) -> AugmentParams:
    return dataclasses.replace(AugmentParams.identity(b), **kw)


def rotation(b: int, deg: float) -> AugmentParams:
    return params(b, rotate=torch.ones(b, dtype=torch.bool), angle_deg=torch.full((b,), float(deg)))


def constant_displacement(b: int, dx: float, dy: float, points: int = 3) -> AugmentParams:
    d = torch.zeros(b, 2, points, points)
    d[:, 0], d[:, 1] = dx, dy
    return params(b, elastic=torch.ones(b, dtype=torch.bool), displacement=d)


# --------------------------------------------------------------------------- shapes, dtypes, value sets


@pytest.mark.parametrize("img_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("lab_dtype", [torch.uint8, torch.int64])
def test_shapes_dtypes_device_preserved(img_dtype, lab_dtype):
    lab = blobs(3, 48, 40).to(lab_dtype)
    img = torch.randn(3, 2, 48, 40).to(img_dtype)
    out_img, out_lab = aug(p_rotate=1.0, p_elastic=1.0, p_intensity=1.0)(img, lab, torch.Generator().manual_seed(1))
    assert out_img.shape == img.shape and out_img.dtype == img_dtype and out_img.device == img.device
    assert out_lab.shape == lab.shape and out_lab.dtype == lab_dtype and out_lab.device == lab.device
    assert torch.isfinite(out_img.float()).all()
    assert not torch.equal(out_lab, lab)  # something actually happened


@pytest.mark.parametrize("values", [(0, 1), (0, 1, 2)])
def test_labels_stay_in_their_value_set(values):
    lab = blobs(8, 64, 64, seed=3).clamp(max=max(values)).to(torch.uint8)
    assert set(lab.unique().tolist()) == set(values)
    img = lab.float().unsqueeze(1)
    a = aug(p_rotate=1.0, p_elastic=1.0, p_intensity=1.0, elastic_sigma=4.0)
    for seed in range(3):
        _, out = a(img, lab, torch.Generator().manual_seed(seed))
        assert set(out.unique().tolist()) <= set(values)
        assert not torch.equal(out, lab)


# --------------------------------------------------------------------------- identities


def test_all_probabilities_zero_is_exact_identity():
    lab = blobs(4)
    img = torch.randn(4, 1, 64, 64)
    img[0, 0, 0, 0] = -0.0
    out_img, out_lab = aug(**OFF)(img, lab, torch.Generator().manual_seed(0))
    assert torch.equal(out_img, img) and torch.equal(out_lab, lab)


def test_disabled_returns_inputs_unchanged():
    lab = blobs(2)
    img = torch.randn(2, 1, 64, 64)
    a = BatchAugment(AugmentConfig(enabled=False, p_rotate=1.0, p_elastic=1.0, p_intensity=1.0))
    out_img, out_lab = a(img, lab)
    assert out_img is img and out_lab is lab


def test_zero_magnitude_transforms_are_exact_identities():
    lab = blobs(4)
    img = torch.randn(4, 1, 64, 64)
    out_img, out_lab = aug(p_rotate=1.0, max_rotate_deg=0.0, p_elastic=1.0, elastic_sigma=0.0, p_intensity=0.0)(
        img, lab, torch.Generator().manual_seed(0)
    )
    assert torch.equal(out_img, img) and torch.equal(out_lab, lab)


def test_unselected_samples_are_bit_identical_and_samples_independent():
    b = 16
    lab = blobs(b, seed=5)
    img = torch.randn(b, 1, 64, 64)
    a = aug(p_rotate=0.5, p_elastic=0.3, p_intensity=0.0)
    p = a.sample_params(b, torch.Generator().manual_seed(7))
    spatial = p.rotate | p.elastic
    assert 0 < int(spatial.sum()) < b  # the seed gives a mixed batch
    out_img, out_lab = a.apply_params(img, lab, p)
    assert torch.equal(out_img[~spatial], img[~spatial]) and torch.equal(out_lab[~spatial], lab[~spatial])
    assert not torch.equal(out_img[spatial], img[spatial])
    # each sample's result does not depend on the rest of the batch (index bookkeeping is right)
    for i in torch.nonzero(spatial).flatten().tolist()[:3]:
        one = AugmentParams(
            p.rotate[i : i + 1], p.angle_deg[i : i + 1], p.elastic[i : i + 1], p.displacement[i : i + 1],
            p.intensity[i : i + 1], p.scale[i : i + 1], p.shift[i : i + 1],
        )  # fmt: skip
        oi, ol = a.apply_params(img[i : i + 1], lab[i : i + 1], one)
        torch.testing.assert_close(oi, out_img[i : i + 1], rtol=0, atol=1e-6)
        assert torch.equal(ol, out_lab[i : i + 1])


# --------------------------------------------------------------------------- rotation geometry


@pytest.mark.parametrize("deg,k", [(90.0, 1), (-90.0, -1), (180.0, 2)])
def test_rotation_by_known_angle_matches_rot90(deg, k):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 32, 32, generator=g)
    lab = (torch.rand(2, 32, 32, generator=g) * 3).long()
    out_img, out_lab = aug().apply_params(img, lab, rotation(2, deg))
    want_img, want_lab = torch.rot90(img, k, dims=(-2, -1)), torch.rot90(lab, k, dims=(-2, -1))
    inner = (..., slice(2, -2), slice(2, -2))
    torch.testing.assert_close(out_img[inner], want_img[inner], rtol=0, atol=1e-4)
    assert torch.equal(out_lab[inner], want_lab[inner])


def test_rotation_is_a_true_rotation_on_non_square_images():
    # a square pattern in the middle of a 32 x 48 canvas, rotated 90 degrees about the centre, must equal
    # rot90 of the pattern (a rotation in normalised coordinates without aspect correction would shear it)
    g = torch.Generator().manual_seed(1)
    pattern = torch.rand(1, 1, 32, 32, generator=g)
    canvas = torch.zeros(1, 1, 32, 48)
    canvas[..., 8:40] = pattern
    out, _ = aug().apply_params(canvas, torch.zeros(1, 32, 48, dtype=torch.long), rotation(1, 90.0))
    torch.testing.assert_close(out[..., 2:-2, 10:38], torch.rot90(pattern, 1, dims=(-2, -1))[..., 2:-2, 2:-2], rtol=0, atol=1e-4)


def test_sampled_angles_and_probabilities():
    a = aug(p_rotate=0.5, max_rotate_deg=15.0, p_elastic=0.3, p_intensity=0.2)
    p = a.sample_params(20000, torch.Generator().manual_seed(0))
    assert p.angle_deg.abs().max() <= 15.0
    assert p.angle_deg.min() < -14.5 and p.angle_deg.max() > 14.5 and abs(p.angle_deg.mean()) < 0.3  # symmetric
    assert abs(p.rotate.float().mean().item() - 0.5) < 0.02
    assert abs(p.elastic.float().mean().item() - 0.3) < 0.02
    assert abs(p.intensity.float().mean().item() - 0.2) < 0.02
    assert p.displacement.shape == (20000, 2, 3, 3)
    assert abs(p.displacement.std().item() - 25.0) < 0.5
    assert 0.9 <= p.scale.min() and p.scale.max() <= 1.1 and -0.1 <= p.shift.min() and p.shift.max() <= 0.1
    # independent per-sample draws: selection for one transform says nothing about another
    both = (p.rotate & p.elastic).float().mean().item()
    assert abs(both - 0.15) < 0.02


# --------------------------------------------------------------------------- alignment, elastic


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_image_and_label_stay_aligned(seed):
    lab = blobs(8, 96, 96, seed=seed)
    img = lab.float().unsqueeze(1)
    out_img, out_lab = aug(p_rotate=1.0, p_elastic=1.0, p_intensity=0.0, elastic_sigma=6.0)(
        img, lab, torch.Generator().manual_seed(seed)
    )
    inner = (..., slice(8, -8), slice(8, -8))
    assert (out_lab[inner] != lab[inner]).float().mean() > 0.02  # the batch really was deformed
    agree = (out_img[:, 0].round().long() == out_lab)[inner].float().mean()
    assert agree >= 0.99, agree
    agree_fg = ((out_img[:, 0] > 0.5) == (out_lab > 0))[inner].float().mean()
    assert agree_fg >= 0.99, agree_fg


def test_elastic_constant_displacement_is_a_shift_in_pixels():
    # elasticdeform semantics: out(p) = in(p + d(p)); a constant field of (dx, dy) pixels is a shift
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 1, 40, 56, generator=g)
    lab = (torch.rand(2, 40, 56, generator=g) * 3).long()
    out_img, out_lab = aug().apply_params(img, lab, constant_displacement(2, dx=3.0, dy=-2.0))
    torch.testing.assert_close(out_img[..., 2:-2, 0:-3], img[..., 0:-4, 3:], rtol=0, atol=1e-4)
    assert torch.equal(out_lab[..., 2:, 0:-3], lab[..., 0:-2, 3:])
    assert (out_lab[..., :2, :] == 0).all() and (out_lab[..., -3:] == 0).all()  # labels pad with background


def test_elastic_control_points_sit_on_corners_and_centre():
    # with ramp images the output value is the sampled source coordinate, i.e. it measures the field
    h = w = 65
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    img = torch.stack([xx, yy]).unsqueeze(0)  # channel 0 = x, channel 1 = y
    d = torch.zeros(1, 2, 3, 3)
    d[0, 0, 1, 1], d[0, 1, 1, 1] = 4.0, -3.0  # centre control point
    d[0, 0, 0, 0], d[0, 1, 0, 0] = 5.0, 2.0  # top-left control point
    p = params(1, elastic=torch.ones(1, dtype=torch.bool), displacement=d)
    out, _ = aug().apply_params(img, torch.zeros(1, h, w, dtype=torch.long), p)
    torch.testing.assert_close(out[0, :, 32, 32], torch.tensor([32.0 + 4.0, 32.0 - 3.0]), rtol=0, atol=1e-3)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([5.0, 2.0]), rtol=0, atol=1e-3)
    torch.testing.assert_close(out[0, :, 64, 64], torch.tensor([64.0, 64.0]), rtol=0, atol=1e-3)  # zero there
    # smooth in between: no jumps larger than the control displacement spread
    assert (out[0, 0, :, 1:] - out[0, 0, :, :-1]).abs().max() < 1.5


def test_elastic_sigma_moves_pixels_and_zero_sigma_does_not():
    lab = blobs(4, 64, 64)
    img = lab.float().unsqueeze(1) + 0.01 * torch.randn(4, 1, 64, 64)
    moved, moved_lab = aug(p_rotate=0.0, p_elastic=1.0, p_intensity=0.0, elastic_sigma=5.0)(
        img, lab, torch.Generator().manual_seed(0)
    )
    assert (moved - img).abs().mean() > 0.05 and (moved_lab != lab).float().mean() > 0.01
    same, same_lab = aug(p_rotate=0.0, p_elastic=1.0, p_intensity=0.0, elastic_sigma=0.0)(
        img, lab, torch.Generator().manual_seed(0)
    )
    assert torch.equal(same, img) and torch.equal(same_lab, lab)


# --------------------------------------------------------------------------- intensity, RNG, layouts


def test_intensity_scale_shift_exact_and_labels_untouched():
    lab = blobs(3)
    img = torch.randn(3, 2, 64, 64)
    p = params(3, intensity=torch.tensor([True, False, True]), scale=torch.tensor([1.1, 5.0, 0.9]),
               shift=torch.tensor([0.05, 5.0, -0.1]))  # fmt: skip
    out_img, out_lab = aug().apply_params(img, lab, p)
    torch.testing.assert_close(out_img[0], img[0] * 1.1 + 0.05)
    assert torch.equal(out_img[1], img[1])
    torch.testing.assert_close(out_img[2], img[2] * 0.9 - 0.1)
    assert torch.equal(out_lab, lab)
    assert not torch.equal(img, out_img) and img.data_ptr() != out_img.data_ptr()  # input not modified in place


def test_inputs_are_not_modified_in_place():
    lab = blobs(4)
    img = torch.randn(4, 1, 64, 64)
    img0, lab0 = img.clone(), lab.clone()
    aug(p_rotate=1.0, p_elastic=1.0, p_intensity=1.0)(img, lab, torch.Generator().manual_seed(0))
    aug(p_rotate=0.0, p_elastic=0.0, p_intensity=1.0)(img, lab, torch.Generator().manual_seed(0))
    assert torch.equal(img, img0) and torch.equal(lab, lab0)


def test_reproducible_from_seed_and_different_across_seeds():
    lab = blobs(8)
    img = torch.randn(8, 1, 64, 64)
    a = aug(p_rotate=0.5, p_elastic=0.5, p_intensity=0.5)
    r1 = a(img, lab, torch.Generator().manual_seed(123))
    r2 = a(img, lab, torch.Generator().manual_seed(123))
    r3 = a(img, lab, torch.Generator().manual_seed(124))
    assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1], r2[1])
    assert not torch.equal(r1[0], r3[0])
    torch.manual_seed(5)
    g1 = a(img, lab)
    torch.manual_seed(5)
    g2 = a(img, lab)
    assert torch.equal(g1[0], g2[0]) and torch.equal(g1[1], g2[1])


def test_rejects_non_cpu_generator_and_bad_inputs():
    a = aug()
    with pytest.raises(ValueError, match="label"):
        a(torch.randn(2, 1, 8, 8), torch.zeros(2, 8, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        a(torch.randn(2, 1, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="float"):
        a(torch.zeros(2, 1, 8, 8, dtype=torch.long), torch.zeros(2, 8, 8, dtype=torch.long))


def test_channels_last_preserved_and_equal():
    lab = blobs(4)
    img = torch.randn(4, 3, 64, 64)
    a = aug(p_rotate=0.7, p_elastic=0.7, p_intensity=0.7)
    ref_img, ref_lab = a(img, lab, torch.Generator().manual_seed(9))
    cl = img.contiguous(memory_format=torch.channels_last)
    out_img, out_lab = a(cl, lab, torch.Generator().manual_seed(9))
    assert out_img.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_img, ref_img, rtol=0, atol=1e-6)
    assert torch.equal(out_lab, ref_lab)


def test_under_autocast_keeps_dtype_and_values():
    lab = blobs(4)
    img = torch.randn(4, 1, 64, 64)
    a = aug(p_rotate=1.0, p_elastic=1.0, p_intensity=1.0)
    ref = a(img, lab, torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = a(img, lab, torch.Generator().manual_seed(2))
    assert out[0].dtype == torch.float32
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


# --------------------------------------------------------------------------- config


def test_config_from_mapping_and_dictconfig():
    from omegaconf import OmegaConf

    c = AugmentConfig.from_mapping({"p_rotate": 1, "intensity_scale": [0.8, 1.2]})
    assert c.p_rotate == 1.0 and c.intensity_scale == (0.8, 1.2) and c.p_elastic == 0.3
    dc = OmegaConf.create({"enabled": False, "elastic_sigma": 10, "intensity_shift": [-0.2, 0.2]})
    c2 = AugmentConfig.from_mapping(dc)
    assert c2.enabled is False and c2.elastic_sigma == 10.0 and c2.intensity_shift == (-0.2, 0.2)
    assert AugmentConfig.from_mapping({}) == AugmentConfig()
    hash(c2)  # frozen and hashable after normalisation


def test_config_unknown_key_raises_lits_error_naming_it():
    with pytest.raises(LitsError, match="p_rotat"):
        AugmentConfig.from_mapping({"p_rotat": 0.5})
    from omegaconf import OmegaConf

    with pytest.raises(LitsError, match="sigma_elastic"):
        AugmentConfig.from_mapping(OmegaConf.create({"sigma_elastic": 3}))


@pytest.mark.parametrize(
    "bad",
    [{"p_rotate": 1.5}, {"p_elastic": -0.1}, {"max_rotate_deg": -1}, {"elastic_points": 0},
     {"elastic_points": 2.5}, {"intensity_scale": [1.2, 0.8]}, {"intensity_shift": 0.1}, {"enabled": "yes"}],
)  # fmt: skip
def test_config_bad_values_raise_lits_error_naming_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(LitsError, match=key):
        AugmentConfig.from_mapping(bad)
