"""Tests for lits.data.augment (batched, on-device augmentation)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_train

from lits.core.errors import LitsError
from lits.train.augment import AugmentConfig, AugmentParams, BatchAugment
from lits.train.augment.spatial import affine_grid, upsample_bicubic

OFF = dict(p_rotate=0.0, p_elastic=0.0, p_intensity=0.0)
SPATIAL_NEW = ("p_scale", "p_mirror_x", "p_mirror_y")
INTENSITY_NEW = ("p_noise", "p_blur", "p_brightness", "p_contrast", "p_lowres", "p_gamma_invert", "p_gamma")
EVERY_P = ("p_rotate", "p_elastic", "p_intensity", *SPATIAL_NEW, *INTENSITY_NEW)
ALL_ON = dict.fromkeys(EVERY_P, 1.0)  # every transform for every sample
HALF_ON = dict.fromkeys(EVERY_P, 0.5)


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
    out_img, out_lab = aug(**ALL_ON)(img, lab, torch.Generator().manual_seed(1))
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
    a = BatchAugment(AugmentConfig(enabled=False, **ALL_ON))
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
        oi, ol = a.apply_params(img[i : i + 1], lab[i : i + 1], p.subset(slice(i, i + 1)))
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
    torch.testing.assert_close(
        out[..., 2:-2, 10:38], torch.rot90(pattern, 1, dims=(-2, -1))[..., 2:-2, 2:-2], rtol=0, atol=1e-4
    )


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
    assert p.scale.min() >= 0.9 and p.scale.max() <= 1.1 and p.shift.min() >= -0.1 and p.shift.max() <= 0.1
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


@pytest.mark.parametrize(("n", "points", "h", "w"), [(3, 3, 128, 128), (2, 5, 40, 56), (1, 4, 65, 33)])
def test_grid_helpers_equal_the_library_calls_they_replace(n, points, h, w):
    g = torch.Generator().manual_seed(n)
    theta = torch.randn(n, 2, 3, generator=g)
    want = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    torch.testing.assert_close(affine_grid(theta, h, w), want, rtol=0, atol=2e-6)
    d = torch.randn(n, 2, points, points, generator=g) * 0.2
    want = F.interpolate(d, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    torch.testing.assert_close(upsample_bicubic(d, h, w), want, rtol=0, atol=1e-6)


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
    aug(**ALL_ON)(img, lab, torch.Generator().manual_seed(0))
    aug(**{**ALL_ON, "p_rotate": 0.0, "p_elastic": 0.0, "p_scale": 0.0})(img, lab, torch.Generator().manual_seed(0))
    aug(**HALF_ON)(img, lab, torch.Generator().manual_seed(0))
    assert torch.equal(img, img0) and torch.equal(lab, lab0)


@pytest.mark.parametrize("kw", [dict(p_rotate=0.5, p_elastic=0.5, p_intensity=0.5), HALF_ON])
def test_reproducible_from_seed_and_different_across_seeds(kw):
    lab = blobs(8)
    img = torch.randn(8, 1, 64, 64)
    a = aug(**kw)
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


@pytest.mark.parametrize("kw", [dict(p_rotate=0.7, p_elastic=0.7, p_intensity=0.7), HALF_ON, ALL_ON])
def test_channels_last_preserved_and_equal(kw):
    lab = blobs(4)
    img = torch.randn(4, 3, 64, 64)
    a = aug(**kw)
    ref_img, ref_lab = a(img, lab, torch.Generator().manual_seed(9))
    cl = img.contiguous(memory_format=torch.channels_last)
    out_img, out_lab = a(cl, lab, torch.Generator().manual_seed(9))
    assert out_img.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_img, ref_img, rtol=0, atol=1e-6)
    assert torch.equal(out_lab, ref_lab)


@pytest.mark.parametrize("kw", [dict(p_rotate=1.0, p_elastic=1.0, p_intensity=1.0), ALL_ON])
def test_under_autocast_keeps_dtype_and_values(kw):
    lab = blobs(4)
    img = torch.randn(4, 1, 64, 64)
    a = aug(**kw)
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
     {"elastic_points": 2.5}, {"intensity_scale": [1.2, 0.8]}, {"intensity_shift": 0.1}, {"enabled": "yes"},
     {"p_scale": 2.0}, {"p_mirror_x": -0.5}, {"p_mirror_y": True}, {"p_noise": "often"}, {"p_blur": 1.01},
     {"p_brightness": -1}, {"p_contrast": 3}, {"p_lowres": 1.5}, {"p_gamma": -0.1}, {"p_gamma_invert": 2},
     {"scale_range": [0.0, 1.4]}, {"scale_range": [1.4, 0.7]}, {"scale_range": 1.2}, {"noise_std": [-0.01, 0.03]},
     {"noise_std": [0.03, 0.0]}, {"blur_sigma": [0.0, 1.0]}, {"blur_sigma": [1.0, 0.5]},
     {"brightness_range": [-0.1, 1.2]}, {"brightness_range": [1.2]}, {"contrast_range": [-1.0, 1.0]},
     {"contrast_range": [1.3, 1.2]},
     {"lowres_zoom": [0.0, 1.0]}, {"lowres_zoom": [0.5, 1.2]}, {"lowres_zoom": [0.9, 0.5]}, {"gamma_range": [0.0, 1.5]},
     {"gamma_range": [1.5, 0.7]}, {"gamma_range": [0.7, float("inf")]}],
)  # fmt: skip
def test_config_bad_values_raise_lits_error_naming_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(LitsError, match=key):
        AugmentConfig.from_mapping(bad)


# --------------------------------------------------------------------------- nnU-Net v2 additions: helpers


def on(b: int, *idx: int) -> torch.Tensor:
    """(B,) bool mask, True at idx (all samples when no idx is given)."""
    m = torch.zeros(b, dtype=torch.bool)
    m[list(idx) if idx else slice(None)] = True
    return m


def disc(b: int, size: int, radius: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    )
    c = (size - 1) / 2
    return (((yy - c) ** 2 + (xx - c) ** 2) <= radius**2).long().expand(b, size, size).clone()


def gamma_reference(x: torch.Tensor, g: float, invert: bool) -> torch.Tensor:
    """nnU-Net's GammaTransform (retain_stats) for one (H, W) channel, in float64."""
    x = x.double() * (-1 if invert else 1)
    mean, std = x.mean(), x.std()
    lo, rng = x.min(), x.max() - x.min()
    y = ((x - lo) / rng.clamp(min=1e-7)) ** g * rng + lo
    y = (y - y.mean()) * (std / y.std().clamp(min=1e-7)) + mean
    return (y * (-1 if invert else 1)).float()


# --------------------------------------------------------------------------- mirroring, scaling


@pytest.mark.parametrize("hw", [(32, 32), (33, 40), (256, 255)])
@pytest.mark.parametrize("mx,my,dims", [(1, 0, (-1,)), (0, 1, (-2,)), (1, 1, (-2, -1))])
def test_mirror_only_equals_torch_flip_exactly(hw, mx, my, dims):
    h, w = hw
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 2, h, w, generator=g)
    lab = (torch.rand(3, h, w, generator=g) * 3).long()
    p = params(3, mirror_x=on(3) if mx else ~on(3), mirror_y=on(3) if my else ~on(3))
    out_img, out_lab = aug().apply_params(img, lab, p)
    want_img, want_lab = img.flip(dims), lab.flip(dims)  # negative dims: the same H/W axes for (B, H, W) labels
    assert torch.equal(out_img, want_img) and torch.equal(out_lab, want_lab)
    assert torch.equal(out_img[0, 1, 0, 0], img[0, 1, -1 if my else 0, -1 if mx else 0])  # corner pixel moved
    assert torch.equal(out_lab[2, -1, -1], lab[2, -1 if not my else 0, -1 if not mx else 0])
    # mixed batch: only the selected samples are flipped
    p = params(3, mirror_x=on(3, 1) if mx else ~on(3), mirror_y=on(3, 1) if my else ~on(3))
    out_img, out_lab = aug().apply_params(img, lab, p)
    assert torch.equal(out_img[1], want_img[1]) and torch.equal(out_img[[0, 2]], img[[0, 2]])
    assert torch.equal(out_lab[1], want_lab[1]) and torch.equal(out_lab[[0, 2]], lab[[0, 2]])


def test_mirror_combined_with_rotation_is_a_flip_then_rotation():
    # the mirror folds into the same grid: mirror_x + 90 deg equals rot90(flip_x(x)) in the interior
    g = torch.Generator().manual_seed(3)
    img = torch.rand(2, 1, 32, 32, generator=g)
    lab = (torch.rand(2, 32, 32, generator=g) * 3).long()
    p = dataclasses.replace(rotation(2, 90.0), mirror_x=on(2))
    out_img, out_lab = aug().apply_params(img, lab, p)
    inner = (..., slice(2, -2), slice(2, -2))
    want = torch.rot90(img.flip(-1), 1, dims=(-2, -1))
    torch.testing.assert_close(out_img[inner], want[inner], rtol=0, atol=1e-4)
    assert torch.equal(out_lab[inner], torch.rot90(lab.flip(-1), 1, dims=(-2, -1))[inner])


@pytest.mark.parametrize("factor,area_ratio", [(2.0, 0.25), (0.5, 4.0), (1.25, 0.64)])
def test_scale_factor_above_one_shrinks_the_anatomy(factor, area_ratio):
    # nnU-Net convention: the sampling coordinates are multiplied by s, so s = 2 halves a centred disc's
    # radius (area / 4) and s = 0.5 doubles it (area * 4)
    lab = disc(2, 96, 14.0)
    img = lab.float().unsqueeze(1)
    p = params(2, scaling=on(2), scale_factor=torch.full((2,), factor))
    out_img, out_lab = aug().apply_params(img, lab, p)
    ratio = (out_lab == 1).sum(dim=(1, 2)).float() / (lab == 1).sum(dim=(1, 2)).float()
    assert ((ratio / area_ratio - 1).abs() <= 0.10).all(), ratio
    img_ratio = out_img.sum(dim=(1, 2, 3)) / img.sum(dim=(1, 2, 3))
    assert ((img_ratio / area_ratio - 1).abs() <= 0.10).all(), img_ratio
    # still centred
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    m = (out_lab[0] == 1).float()
    assert abs((m * yy).sum() / m.sum() - 47.5) < 0.5 and abs((m * xx).sum() / m.sum() - 47.5) < 0.5


def test_scale_range_one_is_not_selected_and_sampled_factors_in_range():
    a = aug(p_scale=1.0, scale_range=[1.0, 1.0], **OFF)
    p = a.sample_params(16, torch.Generator().manual_seed(0))
    assert not p.scaling.any()
    p = aug(p_scale=1.0, scale_range=[0.7, 1.4]).sample_params(5000, torch.Generator().manual_seed(0))
    assert p.scaling.all() and p.scale_factor.min() >= 0.7 and p.scale_factor.max() <= 1.4
    assert abs(p.scale_factor.mean().item() - 1.05) < 0.01  # uniform


@pytest.mark.parametrize(
    "kw",
    [dict(p_scale=1.0), dict(p_rotate=1.0, max_rotate_deg=180.0), dict(p_elastic=1.0, elastic_sigma=4.0),
     dict(p_mirror_x=1.0, p_mirror_y=0.5),
     dict(p_scale=1.0, p_rotate=1.0, p_elastic=1.0, p_mirror_x=0.5, p_mirror_y=0.5)],
)  # fmt: skip
@pytest.mark.parametrize("values", [(0, 1), (0, 1, 2)])
def test_labels_keep_their_value_set_under_every_spatial_transform(kw, values):
    lab = blobs(8, 64, 64, seed=4).clamp(max=max(values)).to(torch.uint8)
    img = lab.float().unsqueeze(1)
    a = aug(**{**OFF, **kw})
    for seed in range(2):
        out_img, out = a(img, lab, torch.Generator().manual_seed(seed))
        assert set(out.unique().tolist()) <= set(values) and out.dtype == torch.uint8
        assert not torch.equal(out, lab)
        # image and label stay aligned
        inner = (..., slice(8, -8), slice(8, -8))
        assert (out_img[:, 0].round().long() == out.long())[inner].float().mean() > 0.98


# --------------------------------------------------------------------------- per-transform selection


@pytest.mark.parametrize("p_name", [*SPATIAL_NEW, *INTENSITY_NEW])
def test_unselected_samples_are_bit_identical_for_each_new_transform(p_name):
    b = 16
    lab = blobs(b, seed=6)
    img = torch.rand(b, 2, 64, 64) * 0.6 + 0.2 * lab.float().unsqueeze(1)
    a = aug(**{**OFF, p_name: 0.5})
    p = a.sample_params(b, torch.Generator().manual_seed(11))
    mask = getattr(p, {"p_scale": "scaling"}.get(p_name, p_name[2:]))  # p_noise -> noise, ...
    if p_name == "p_lowres":
        zoom = p.lowres_zoom
        mask = mask & (torch.round(zoom.double() * 64) != 64)
    assert 0 < int(mask.sum()) < b, mask
    out_img, out_lab = a.apply_params(img, lab, p)
    assert torch.equal(out_img[~mask], img[~mask]) and torch.equal(out_lab[~mask], lab[~mask])
    assert all(not torch.equal(out_img[i], img[i]) for i in torch.nonzero(mask).flatten().tolist())
    if p_name in INTENSITY_NEW:
        assert torch.equal(out_lab, lab)


def test_each_sample_is_independent_of_the_rest_of_the_batch():
    b = 12
    lab = blobs(b, seed=8)
    img = torch.rand(b, 2, 64, 64) * 0.5 + 0.25 * lab.float().unsqueeze(1)
    a = aug(**HALF_ON, elastic_sigma=4.0)
    p = a.sample_params(b, torch.Generator().manual_seed(5))
    out_img, out_lab = a.apply_params(img, lab, p)
    for i in range(b):
        oi, ol = a.apply_params(img[i : i + 1], lab[i : i + 1], p.subset(slice(i, i + 1)))
        torch.testing.assert_close(oi, out_img[i : i + 1], rtol=0, atol=1e-6)
        assert torch.equal(ol, out_lab[i : i + 1])


# --------------------------------------------------------------------------- intensity transforms


def test_noise_std_matches_the_drawn_std_and_sampled_stds_in_range():
    img = torch.full((3, 1, 256, 256), 0.5)
    lab = torch.zeros(3, 256, 256, dtype=torch.long)
    stds = torch.tensor([0.05, 0.0, 0.01])
    p = params(3, noise=on(3, 0, 2), noise_std=stds, noise_seed=torch.tensor([1, 2, 3]))
    out, _ = aug().apply_params(img, lab, p)
    measured = (out - img).std(dim=(1, 2, 3))
    assert abs(measured[0] / 0.05 - 1) < 0.03 and abs(measured[2] / 0.01 - 1) < 0.03
    assert torch.equal(out[1], img[1])
    assert abs((out[0] - 0.5).mean()) < 0.002  # zero mean
    # different seeds, different fields; same seed, same field
    assert not torch.allclose((out[0] - 0.5) / 0.05, (out[2] - 0.5) / 0.01, atol=1e-3)
    q = aug(p_noise=1.0, noise_std=[0.0, 0.03], **OFF).sample_params(4000, torch.Generator().manual_seed(0))
    assert q.noise.all() and q.noise_std.min() >= 0 and q.noise_std.max() <= 0.03
    assert abs(q.noise_std.mean().item() - 0.015) < 0.001 and q.noise_seed.unique().numel() == 4000


def test_blur_keeps_constant_images_constant_and_reduces_white_noise_variance():
    g = torch.Generator().manual_seed(0)
    img = torch.cat([torch.full((1, 2, 64, 48), 0.7), torch.rand(2, 2, 64, 48, generator=g)])
    lab = torch.zeros(3, 64, 48, dtype=torch.long)
    sigma = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
    out, _ = aug().apply_params(img, lab, params(3, blur=on(3), blur_sigma=sigma))
    torch.testing.assert_close(out[0], img[0], rtol=0, atol=1e-6)
    var_in, var_out = img[1:].var(dim=(2, 3)), out[1:].var(dim=(2, 3))
    # white noise through a 2d Gaussian of sigma s keeps ~1 / (4 pi s^2) of its variance
    assert (var_out[0] / var_in[0] < 0.15).all() and (var_out[1] / var_in[1] < 0.45).all()
    assert (var_out[0] < var_out[1]).all()  # more blur, less variance
    torch.testing.assert_close(out[1:].mean(dim=(2, 3)), img[1:].mean(dim=(2, 3)), rtol=0, atol=2e-3)


def test_blur_matches_a_direct_separable_gaussian_per_axis():
    # an impulse in the middle becomes the (normalised) Gaussian kernel, with its own sigma per axis
    img = torch.zeros(1, 1, 33, 33)
    img[..., 16, 16] = 1.0
    out, _ = aug().apply_params(img, torch.zeros(1, 33, 33, dtype=torch.long),
                                params(1, blur=on(1), blur_sigma=torch.tensor([[1.0, 0.5]])))  # fmt: skip
    t = torch.arange(-3, 4, dtype=torch.float64)
    ky, kx = torch.exp(-0.5 * t**2), torch.exp(-0.5 * (t / 0.5) ** 2)
    want = torch.outer(ky / ky.sum(), kx / kx.sum()).float()
    torch.testing.assert_close(out[0, 0, 13:20, 13:20], want, rtol=0, atol=1e-7)
    assert out[0, 0].sum().sub(1).abs() < 1e-6 and out[0, 0, :13].abs().max() == 0


def test_brightness_is_multiplicative_and_contrast_keeps_the_original_range():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 2, 32, 32, generator=g) * 0.8 + 0.1
    lab = torch.zeros(3, 32, 32, dtype=torch.long)
    f = torch.tensor([1.2, 0.8, 0.75])
    out, _ = aug().apply_params(img, lab, params(3, brightness=on(3, 0, 2), brightness_factor=f))
    torch.testing.assert_close(out[0], img[0] * 1.2, rtol=0, atol=1e-7)
    torch.testing.assert_close(out[2], img[2] * 0.75, rtol=0, atol=1e-7)
    assert torch.equal(out[1], img[1])
    out, _ = aug().apply_params(img, lab, params(3, contrast=on(3), contrast_factor=torch.tensor([1.25, 0.5, 3.0])))
    lo, hi = img.amin(dim=(2, 3), keepdim=True), img.amax(dim=(2, 3), keepdim=True)
    assert ((out >= lo) & (out <= hi)).all()
    mean = img.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(out[1], (img[1] - mean[1]) * 0.5 + mean[1], rtol=0, atol=1e-6)  # f < 1: no clipping
    torch.testing.assert_close(out[1].mean(dim=(1, 2)), mean[1].flatten(), rtol=0, atol=1e-6)
    torch.testing.assert_close(out[0], ((img[0] - mean[0]) * 1.25 + mean[0]).clamp(lo[0], hi[0]), rtol=0, atol=1e-6)
    assert out[2].std() > img[2].std()  # more contrast even though clipped


@pytest.mark.parametrize("invert", [False, True])
def test_gamma_retains_mean_and_std_and_matches_nnunet(invert):
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 2, 48, 40, generator=g) ** 2 * 0.7 + 0.1
    img[2, 1] = 0.4  # a constant channel stays finite and constant
    lab = torch.zeros(3, 48, 40, dtype=torch.long)
    gam = torch.tensor([0.7, 1.5, 1.3])
    kw = dict(gamma_invert=on(3), gamma_invert_value=gam) if invert else dict(gamma=on(3), gamma_value=gam)
    out, _ = aug().apply_params(img, lab, params(3, **kw))
    torch.testing.assert_close(out.mean(dim=(2, 3)), img.mean(dim=(2, 3)), rtol=0, atol=1e-4)
    torch.testing.assert_close(out.std(dim=(2, 3)), img.std(dim=(2, 3)), rtol=0, atol=1e-4)
    assert not torch.allclose(out[0], img[0], atol=1e-3)
    assert torch.isfinite(out).all() and torch.allclose(out[2, 1], img[2, 1], atol=1e-6)
    for i in range(2):
        for c in range(2):
            torch.testing.assert_close(out[i, c], gamma_reference(img[i, c], gam[i].item(), invert), rtol=0, atol=1e-5)
    # gamma < 1 brightens the (rescaled) image before the stats are restored: the median moves up; inverted: down
    shift = out[0].median() - img[0].median()
    assert (shift < 0) if invert else (shift > 0)


def test_inverted_gamma_runs_before_gamma():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(1, 1, 32, 32, generator=g)
    lab = torch.zeros(1, 32, 32, dtype=torch.long)
    both = params(
        1, gamma_invert=on(1), gamma_invert_value=torch.tensor([0.7]), gamma=on(1), gamma_value=torch.tensor([1.4])
    )
    out, _ = aug().apply_params(img, lab, both)
    want = gamma_reference(gamma_reference(img[0, 0], 0.7, True), 1.4, False)
    torch.testing.assert_close(out[0, 0], want, rtol=0, atol=1e-5)


def test_lowres_zoom_one_is_identity_and_half_is_nearest_down_bilinear_up():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 2, 64, 48, generator=g)
    lab = (torch.rand(3, 64, 48, generator=g) * 3).long()
    zoom = torch.tensor([1.0, 0.5, 0.995])  # 0.995 * 64 and * 48 round back to the same size: identity too
    out_img, out_lab = aug().apply_params(img, lab, params(3, lowres=on(3), lowres_zoom=zoom))
    assert torch.equal(out_img[0], img[0]) and torch.equal(out_img[2], img[2]) and torch.equal(out_lab, lab)
    down = F.interpolate(img[1:2], size=(32, 24), mode="nearest-exact")
    want = F.interpolate(down, size=(64, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out_img[1:2], want, rtol=0, atol=1e-6)
    assert not torch.allclose(out_img[1], img[1], atol=1e-2)


@pytest.mark.parametrize("hw,zoom", [((50, 38), 0.37), ((64, 64), 0.77), ((255, 129), 0.5), ((31, 17), 0.61)])
def test_lowres_matches_interpolate_for_odd_sizes_and_zooms(hw, zoom):
    h, w = hw
    img = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(1))
    out, _ = aug().apply_params(img, torch.zeros(2, h, w, dtype=torch.long),
                                params(2, lowres=on(2), lowres_zoom=torch.tensor([zoom, 0.5])))  # fmt: skip
    for i, z in enumerate((zoom, 0.5)):
        z = float(torch.tensor(z))  # the zoom is stored as float32 (0.37 * 50 -> 18.5000002 -> 19 pixels)
        down = F.interpolate(img[i : i + 1], size=(round(z * h), round(z * w)), mode="nearest-exact")
        want = F.interpolate(down, size=(h, w), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out[i : i + 1], want, rtol=0, atol=1e-6)


def test_intensity_steps_run_in_order_noise_blur_brightness_contrast_lowres_gamma_then_scale_shift():
    g = torch.Generator().manual_seed(4)
    img = torch.rand(1, 1, 32, 32, generator=g)
    lab = torch.zeros(1, 32, 32, dtype=torch.long)
    one = on(1)
    kw = dict(
        noise=one, noise_std=torch.tensor([0.02]), noise_seed=torch.tensor([7]),
        blur=one, blur_sigma=torch.tensor([[0.8, 0.6]]), brightness=one, brightness_factor=torch.tensor([1.1]),
        contrast=one, contrast_factor=torch.tensor([0.9]), lowres=one, lowres_zoom=torch.tensor([0.6]),
        gamma_invert=one, gamma_invert_value=torch.tensor([1.2]), gamma=one, gamma_value=torch.tensor([0.8]),
        intensity=one, scale=torch.tensor([1.05]), shift=torch.tensor([-0.02]),
    )  # fmt: skip
    a = aug()
    out, _ = a.apply_params(img, lab, params(1, **kw))
    x = img
    steps = [("noise", "noise_std", "noise_seed"), ("blur", "blur_sigma"), ("brightness", "brightness_factor"),
             ("contrast", "contrast_factor"), ("lowres", "lowres_zoom"), ("gamma_invert", "gamma_invert_value"),
             ("gamma", "gamma_value"), ("intensity", "scale", "shift")]  # fmt: skip
    for names in steps:
        x, _ = a.apply_params(x, lab, params(1, **{k: kw[k] for k in names}))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- sampling, RNG, configs


def test_number_of_generator_draws_does_not_depend_on_the_probabilities():
    zero = dict.fromkeys(EVERY_P, 0.0)
    states = []
    for kw in (zero, ALL_ON, HALF_ON):
        g = torch.Generator().manual_seed(42)
        aug(**kw).sample_params(10, g)
        states.append(g.get_state())
    assert torch.equal(states[0], states[1]) and torch.equal(states[0], states[2])
    # and the original parameters come first, unchanged by the new ones
    p_old = aug(p_rotate=0.5, p_elastic=0.3, p_intensity=0.5).sample_params(10, torch.Generator().manual_seed(3))
    p_new = aug(**HALF_ON).sample_params(10, torch.Generator().manual_seed(3))
    for name in ("angle_deg", "displacement", "scale", "shift"):
        assert torch.equal(getattr(p_old, name), getattr(p_new, name))


def test_new_probabilities_and_nnunet_factor_sampling():
    a = aug(p_scale=0.2, p_mirror_x=0.5, p_mirror_y=0.5, p_noise=0.1, p_blur=0.2, p_brightness=0.15, p_contrast=0.15,
            p_lowres=0.25, p_gamma_invert=0.1, p_gamma=0.3)  # fmt: skip
    p = a.sample_params(20000, torch.Generator().manual_seed(0))
    expected = [("scaling", 0.2), ("mirror_x", 0.5), ("mirror_y", 0.5), ("noise", 0.1), ("blur", 0.2),
                ("brightness", 0.15), ("contrast", 0.15), ("lowres", 0.25), ("gamma_invert", 0.1),
                ("gamma", 0.3)]  # fmt: skip
    for name, prob in expected:
        assert abs(getattr(p, name).float().mean().item() - prob) < 0.015, name
    assert abs((p.mirror_x & p.mirror_y).float().mean().item() - 0.25) < 0.015  # independent
    assert p.blur_sigma.min() >= 0.5 and p.blur_sigma.max() <= 1.0 and p.blur_sigma.shape == (20000, 2)
    assert p.lowres_zoom.min() >= 0.5 and p.lowres_zoom.max() <= 1.0
    for name, (lo, hi) in [("brightness_factor", (0.75, 1.25)), ("contrast_factor", (0.75, 1.25)),
                           ("gamma_value", (0.7, 1.5)), ("gamma_invert_value", (0.7, 1.5))]:  # fmt: skip
        v = getattr(p, name)
        assert lo <= v.min() and v.max() <= hi, name
        # nnU-Net BGContrast: half of the factors below 1, half above (gamma [0.7, 1.5] is not uniform)
        assert abs((v < 1).float().mean().item() - 0.5) < 0.015, name


def test_config_files_default_and_nnunet():
    default = AugmentConfig.from_mapping(compose_train("augment=default").augment)
    assert default == AugmentConfig()  # the YAML and the dataclass defaults agree
    assert all(getattr(default, k) == 0.0 for k in (*SPATIAL_NEW, *INTENSITY_NEW))
    nn = AugmentConfig.from_mapping(compose_train("augment=nnunet").augment)
    assert (nn.p_scale, nn.scale_range, nn.p_rotate, nn.max_rotate_deg, nn.p_elastic) == (
        0.2,
        (0.7, 1.4),
        0.2,
        180.0,
        0.0,
    )
    # blur and low resolution: nnU-Net's 0.2 / 0.25 per sample times its per-channel 0.5 (one CT channel)
    assert (nn.p_mirror_x, nn.p_mirror_y, nn.p_noise, nn.p_blur, nn.p_brightness, nn.p_contrast) == (
        0.5,
        0.5,
        0.1,
        0.1,
        0.15,
        0.15,
    )
    assert (nn.p_lowres, nn.p_gamma, nn.p_gamma_invert, nn.p_intensity) == (0.125, 0.3, 0.1, 0.0)
    assert nn.enabled is True
    lab = blobs(8)
    img = torch.rand(8, 1, 64, 64)
    out_img, out_lab = BatchAugment(nn)(img, lab, torch.Generator().manual_seed(0))
    assert out_img.shape == img.shape and torch.isfinite(out_img).all() and set(out_lab.unique().tolist()) <= {0, 1, 2}


def test_identity_params_and_subset():
    p = AugmentParams.identity(5)
    img, lab = torch.rand(5, 1, 16, 16), blobs(5, 16, 16, margin=2)
    out_img, out_lab = aug().apply_params(img, lab, p)
    assert torch.equal(out_img, img) and torch.equal(out_lab, lab)
    assert not p.spatial.any()
    s = aug(**ALL_ON).sample_params(5, torch.Generator().manual_seed(0)).subset(torch.tensor([4, 1]))
    assert s.rotate.shape == (2,) and s.displacement.shape[0] == 2 and s.blur_sigma.shape == (2, 2)
