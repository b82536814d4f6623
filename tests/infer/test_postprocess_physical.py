"""Post-processing in physical units: size limits in mm^3, small confident components kept, the optional CRF stage."""

import dataclasses

import numpy as np
import pytest

from lits.core.config import PostprocessConfig
from lits.core.errors import LitsError
from lits.infer.postprocess import ablation_stages, postprocess

OFF = PostprocessConfig(largest_liver_component=False, tumor_in_liver=False, min_tumor_voxels=0)


def probabilities():
    """Liver everywhere; tumours of 8, 27 and 64 voxels (cubes of side 2, 3, 4); the 8-voxel one peaks at 0.95,
    the others at 0.7."""
    liver = np.full((12, 20, 40), 0.9, np.float32)
    tumor = np.zeros_like(liver)
    tumor[1:3, 1:3, 1:3] = 0.95
    tumor[4:7, 5:8, 10:13] = 0.7
    tumor[6:10, 10:14, 25:29] = 0.7
    return liver, tumor


def tumour_sizes(labels):
    from scipy import ndimage

    lab, n = ndimage.label(labels == 2, structure=np.ones((3, 3, 3)))
    return sorted(np.bincount(lab.ravel())[1:].tolist())


@pytest.mark.parametrize("spacing, kept", [((1.0,) * 3, [64]), ((2.0,) * 3, [8, 27, 64]), ((0.5,) * 3, [])])
def test_the_mm3_limit_means_the_same_volume_at_any_voxel_size(spacing, kept):
    cfg = dataclasses.replace(OFF, min_tumor_mm3=30.0)  # 30 voxels at 1 mm, 3.75 at 2 mm, 240 at 0.5 mm
    assert tumour_sizes(postprocess(*probabilities(), cfg, spacing)) == kept


def test_the_stricter_of_the_voxel_and_mm3_limits_applies():
    cfg = dataclasses.replace(OFF, min_tumor_voxels=30, min_tumor_mm3=1.0)
    assert tumour_sizes(postprocess(*probabilities(), cfg, (2.0, 2.0, 2.0))) == [64]
    with pytest.raises(ValueError, match="needs the voxel spacing"):
        postprocess(*probabilities(), dataclasses.replace(OFF, min_tumor_mm3=1.0))


def test_small_confident_components_are_kept():
    cfg = dataclasses.replace(OFF, min_tumor_voxels=30, keep_confident=0.9)
    assert tumour_sizes(postprocess(*probabilities(), cfg)) == [8, 64]  # 8 voxels but peak 0.95 >= 0.9
    cfg = dataclasses.replace(OFF, min_tumor_voxels=30, keep_confident=0.96)
    assert tumour_sizes(postprocess(*probabilities(), cfg)) == [64]
    assert tumour_sizes(postprocess(*probabilities(), dataclasses.replace(OFF, min_tumor_voxels=30))) == [64]


def test_bad_physical_settings_are_one_line_errors():
    for bad in ({"min_tumor_mm3": -1}, {"keep_confident": 1.5}, {"crf": "yes"}, {"crf_iterations": 0}):
        with pytest.raises(LitsError, match=next(iter(bad))):
            PostprocessConfig.from_mapping(bad)


def test_ablation_turns_on_the_configured_size_filter_and_adds_the_crf_stage():
    cfg = PostprocessConfig(min_tumor_voxels=0, min_tumor_mm3=25.0, keep_confident=0.8, crf=True)
    stages = {name: stage for name, _, stage in ablation_stages(cfg)}
    assert stages["raw"].min_tumor_mm3 == 0 and not stages["raw"].crf
    assert (stages["min_tumor"].min_tumor_mm3, stages["min_tumor"].min_tumor_voxels) == (25.0, 0)
    assert list(stages)[-1] == "crf" and stages["crf"].crf and not stages["hysteresis"].crf


def test_crf_refines_probabilities_along_image_edges():
    pytest.importorskip("pydensecrf.densecrf", reason="the optional CRF extra (pydensecrf2) is not installed")
    from lits.infer.crf import refine

    rng = np.random.default_rng(0)
    image = np.full((3, 48, 48), 0.3, np.float32)
    image[:, 12:36, 12:36] = 0.7  # a bright square: the organ
    liver = np.clip(0.5 + 0.45 * (image - 0.5) / 0.2 + rng.normal(0, 0.25, image.shape), 0.01, 0.99)
    tumor = np.full_like(liver, 0.01)
    refined_liver, refined_tumor = refine(image, liver.astype(np.float32), tumor, PostprocessConfig(crf=True))
    truth = image > 0.5
    noisy_errors = ((liver > 0.5) != truth).sum()
    assert ((refined_liver > 0.5) != truth).sum() < noisy_errors / 4  # the edges of the image clean the noise
    assert np.all((refined_tumor >= 0) & (refined_tumor <= refined_liver + 1e-6))
    labels = postprocess(liver, tumor, dataclasses.replace(OFF, crf=True), image=image)
    assert ((labels >= 1) != truth).sum() < noisy_errors / 4
