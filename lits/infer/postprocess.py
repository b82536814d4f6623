"""Probability maps -> cleaned LiTS label map (0 background, 1 liver, 2 tumour), with 3D connected components.

``postprocess`` applies the enabled steps in this fixed order (each one is a config switch):

1. threshold        L = liver_prob > threshold (liver head), T = tumor_prob > threshold (tumour head; its own
                    tumor_threshold when set).
   hysteresis       instead of the plain tumour threshold: T = voxels > hysteresis_low that are connected (face
                    connectivity, skimage's ``apply_hysteresis_threshold``) to a voxel > hysteresis_high. With
                    high = threshold this only grows confident detections into low-confidence neighbours; with
                    high > threshold it also drops components that are nowhere confident. Off by default.
0. crf              dense-CRF refinement (lits/infer/crf.py) of the probabilities first, slice by slice, when
                    on; every step below then works on the refined probabilities. Off by default.
2. largest_liver_component
                    keep only the largest 26-connected 3D component of L | T (liver incl. tumour); voxels of
                    every other component (liver and tumour) become background.
3. fill_liver_holes L |= 3D cavities of L: background regions not 6-connected to the outside of L's bounding
                    box (the definition of ``scipy.ndimage.binary_fill_holes``). Tumour voxels inside stay
                    tumour, the rest become liver. Running before step 4 means a tumour sitting in a hole of
                    the liver head's mask is not hollowed out by step 4. Off by default (ablation step).
4. tumor_in_liver   T &= dilate(L, liver_dilation): tumour voxels farther than ``liver_dilation`` voxels
                    (Chebyshev distance, i.e. a (2r+1)^3 cube: the same number of voxels in-plane and
                    through-plane) from the liver head's (cleaned) mask are dropped, voxel by voxel.
5. min_tumor_voxels, min_tumor_mm3
                    drop 26-connected 3D tumour components with fewer voxels than min_tumor_voxels or a smaller
                    volume than min_tumor_mm3 (needs the voxel spacing; either 0 = off), unless the component's
                    peak tumour probability reaches keep_confident (1 = never: size alone decides). A dropped
                    tumour voxel stays liver if the liver head marked it, else becomes background.
6. labels           1 where L | T, 2 where T (tumour implies the liver label set {1, 2}).

``ablation_stages(cfg)`` lists the cumulative ablation (raw, then each step switched on in turn) that
evaluate.py reports next to the configured pipeline.

Cost: every step works inside the bounding box of the mask it touches (after step 2 that is the liver's box),
component sizes come from one ``np.bincount`` over the labelled foreground voxels and selection from a lookup
table (no Python loop over components); the dilation is a separable ``maximum_filter``; hole filling is one
labelling of the background instead of ``binary_fill_holes``' iterated dilation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from lits.core.config import PostprocessConfig

_CONN26 = np.ones((3, 3, 3), dtype=bool)


def probabilities_to_labels(
    liver_prob: np.ndarray, tumor_prob: np.ndarray, threshold: float = 0.5, tumor_threshold: float | None = None
) -> np.ndarray:
    """Raw label map (uint8): 1 where liver_prob > threshold, 2 where tumor_prob > tumor_threshold (None: the
    same threshold); no cleanup.

    Tumour counts as liver: a voxel above threshold for tumour is labelled 2 whatever its liver probability.
    """
    liver, tumor = _threshold(liver_prob, tumor_prob, threshold, tumor_threshold)
    return _compose(liver, tumor)


def postprocess(
    liver_prob: np.ndarray,
    tumor_prob: np.ndarray,
    cfg: PostprocessConfig | Mapping[str, Any] | None = None,
    spacing: tuple[float, float, float] | None = None,
    image: np.ndarray | None = None,
) -> np.ndarray:
    """Label map (uint8, same shape) after the configured steps, in the order of the module docstring.

    ``cfg`` may be a PostprocessConfig, a dict / OmegaConf node (validated by ``from_mapping``) or None
    (defaults). Component analysis is 3D, so the inputs are (Z, Y, X) probability volumes. ``spacing`` (sz, sy, sx)
    mm is needed by ``min_tumor_mm3``; ``image`` (the [0, 1] HU window on the same grid) by ``crf``.
    """
    cfg = PostprocessConfig.from_mapping(cfg)
    if cfg.crf:
        if image is None:
            raise ValueError("postprocess: crf=true needs the image the probabilities belong to")
        from lits.infer.crf import refine

        liver_prob, tumor_prob = refine(image, liver_prob, tumor_prob, cfg)
    liver, tumor = _threshold(liver_prob, tumor_prob, cfg.threshold, cfg.tumor_cut)
    return postprocess_masks(liver, tumor, cfg, tumor_prob, spacing)


def postprocess_masks(
    liver: np.ndarray,
    tumor: np.ndarray,
    cfg: PostprocessConfig | Mapping[str, Any] | None = None,
    tumor_prob: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """`postprocess` from the thresholded masks on (liver_prob > threshold, tumor_prob > tumour threshold, bool,
    modified in place): what a prediction that never holds whole probability volumes hands over. `tumor_prob` is
    needed only with hysteresis or keep_confident < 1 (`needs_probabilities`), `spacing` with min_tumor_mm3. Same
    labels as `postprocess` on the probabilities (the CRF, which needs them, excepted)."""
    cfg = PostprocessConfig.from_mapping(cfg)
    liver, tumor = shaped_masks(liver, tumor, cfg, tumor_prob)
    return size_filtered_labels(liver, tumor, cfg, tumor_prob, spacing)


def shaped_masks(
    liver: np.ndarray, tumor: np.ndarray, cfg: PostprocessConfig, tumor_prob: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(liver, tumour) masks after every step before the small-tumour removal: hysteresis, largest component, hole
    filling, tumour in liver (in place where it can). Candidates that differ only in the size filter share these."""
    if liver.ndim != 3:
        raise ValueError(f"postprocess expects 3D (Z, Y, X) probability volumes, got shape {liver.shape}")
    if cfg.hysteresis:
        if tumor_prob is None:
            raise ValueError("postprocess_masks: hysteresis needs the tumour probabilities (tumor_prob)")
        tumor = hysteresis_mask(tumor_prob, cfg.hysteresis_low, cfg.hysteresis_high)
    if cfg.largest_liver_component:
        _keep_largest_component(liver, tumor)
    if cfg.fill_liver_holes:
        _fill_holes(liver)
    if cfg.tumor_in_liver:
        _restrict_to_dilated(tumor, liver, cfg.liver_dilation)
    return liver, tumor


def size_filtered_labels(
    liver: np.ndarray,
    tumor: np.ndarray,
    cfg: PostprocessConfig,
    tumor_prob: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """The last step, small-tumour removal (tumour mask modified in place), then the label map."""
    if cfg.removes_small_tumors:
        if tumor_prob is None and cfg.keep_confident < 1.0:
            raise ValueError("postprocess_masks: keep_confident needs the tumour probabilities (tumor_prob)")
        _remove_small_components(tumor, tumor_prob, _min_voxels(cfg, spacing), cfg.keep_confident)
    return _compose(liver, tumor)


def needs_probabilities(cfg: PostprocessConfig) -> bool:
    """Whether post-processing reads the probabilities beyond the thresholded masks."""
    return cfg.hysteresis or cfg.crf or (cfg.removes_small_tumors and cfg.keep_confident < 1.0)


def _min_voxels(cfg: PostprocessConfig, spacing) -> int:
    """The size limit in voxels: the larger of min_tumor_voxels and min_tumor_mm3 at this voxel size."""
    if cfg.min_tumor_mm3 <= 0:
        return cfg.min_tumor_voxels
    if spacing is None:
        raise ValueError("postprocess: min_tumor_mm3 needs the voxel spacing (mm)")
    return max(cfg.min_tumor_voxels, int(np.ceil(cfg.min_tumor_mm3 / float(np.prod(spacing)) - 1e-9)))


def hysteresis_mask(prob: np.ndarray, low: float, high: float) -> np.ndarray:
    """Voxels > low connected to a voxel > high (skimage), computed inside the bounding box of prob > low."""
    prob = np.asarray(prob)
    out = np.zeros(prob.shape, dtype=bool)
    box = _bbox(prob > low)
    if box is not None:  # labelling only the box keeps a 512x512x500 volume at tumour-box cost
        out[box] = apply_hysteresis_threshold(prob[box], low, high)
    return out


# Cumulative ablation: (stage name, what it adds, the switches it turns on). Pipeline order stays that of the
# module docstring; only which steps are on changes.
_ABLATION_STEPS = (
    ("largest_liver", "+ largest liver component", "largest_liver_component"),
    ("fill_holes", "+ liver hole filling", "fill_liver_holes"),
    ("tumor_in_liver", "+ tumour restricted to liver", "tumor_in_liver"),
    ("min_tumor", "+ small tumour removal", "size_filter"),
    ("hysteresis", "+ hysteresis thresholding", "hysteresis"),
)


def ablation_stages(
    cfg: PostprocessConfig | Mapping[str, Any] | None = None,
) -> list[tuple[str, str, PostprocessConfig]]:
    """[(name, description, config)]: 'raw' (threshold only), then one more step switched on per stage.

    Parameters (threshold, dilation, size limit, hysteresis thresholds) come from ``cfg``; a size limit of 0
    (step off in ``cfg``) uses the class default so the ablation still shows what the step would buy.
    """
    cfg = PostprocessConfig.from_mapping(cfg)
    current = dataclasses.replace(
        cfg,
        largest_liver_component=False,
        fill_liver_holes=False,
        tumor_in_liver=False,
        min_tumor_voxels=0,
        min_tumor_mm3=0.0,
        hysteresis=False,
        crf=False,
    )
    stages = [("raw", "threshold only", current)]
    for name, description, switch in _ABLATION_STEPS:
        if switch == "size_filter":  # the configured limits, or the default voxel limit when the step is off
            limits = {"min_tumor_voxels": cfg.min_tumor_voxels, "min_tumor_mm3": cfg.min_tumor_mm3}
            if not cfg.removes_small_tumors:
                limits["min_tumor_voxels"] = PostprocessConfig.min_tumor_voxels
            current = dataclasses.replace(current, **limits)
        else:
            current = dataclasses.replace(current, **{switch: True})
        stages.append((name, description, current))
    if cfg.crf:
        stages.append(("crf", "+ dense-CRF refinement", dataclasses.replace(current, crf=True)))
    return stages


def _switched_on(config: PostprocessConfig, switch: str, limits_from: PostprocessConfig) -> PostprocessConfig:
    """`config` with one ablation step on; the size filter takes `limits_from`'s limits, or the class default."""
    if switch != "size_filter":
        return dataclasses.replace(config, **{switch: True})
    limits = {"min_tumor_voxels": limits_from.min_tumor_voxels, "min_tumor_mm3": limits_from.min_tumor_mm3}
    if not limits_from.removes_small_tumors:
        limits["min_tumor_voxels"] = PostprocessConfig.min_tumor_voxels
    return dataclasses.replace(config, **limits)


def pipeline_stages(cfg: PostprocessConfig | Mapping[str, Any]) -> tuple[list, list]:
    """(applied, candidates) as [(name, description, config)] for evaluate's stage table.

    applied: 'raw' (threshold only), then each step `cfg` switches on, cumulatively, in the order `postprocess`
    applies them; the last one is `cfg` itself (evaluate shows it as 'post'). candidates: `cfg` plus one step it leaves
    off ('post+<step>'; the size filter at its default limit), each apart: what switching it on would change.
    """
    cfg = PostprocessConfig.from_mapping(cfg)
    current = dataclasses.replace(cfg, largest_liver_component=False, fill_liver_holes=False, tumor_in_liver=False,
                                  min_tumor_voxels=0, min_tumor_mm3=0.0, hysteresis=False, crf=False)  # fmt: skip
    applied, candidates = [("raw", "threshold only", current)], []
    for name, description, switch in _ABLATION_STEPS:
        on = cfg.removes_small_tumors if switch == "size_filter" else getattr(cfg, switch)
        if on:
            current = _switched_on(current, switch, cfg)
            applied.append((name, description, current))
        else:
            candidates.append((f"post+{name}", f"candidate, not applied: post {description}",
                               _switched_on(cfg, switch, cfg)))  # fmt: skip
    if cfg.crf:
        applied.append(("crf", "+ dense-CRF refinement", dataclasses.replace(current, crf=True)))
    return applied, candidates


# ----------------------------------------------------------------------------------------------- helpers


def _threshold(
    liver_prob: np.ndarray, tumor_prob: np.ndarray, threshold: float, tumor_threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    liver_prob = np.asarray(liver_prob)
    tumor_prob = np.asarray(tumor_prob)
    if liver_prob.shape != tumor_prob.shape:
        raise ValueError(f"liver and tumour probability maps differ in shape: {liver_prob.shape} vs {tumor_prob.shape}")
    return liver_prob > threshold, tumor_prob > (threshold if tumor_threshold is None else tumor_threshold)


def _compose(liver: np.ndarray, tumor: np.ndarray) -> np.ndarray:
    # bool -> uint8 views are 0/1; max(liver, 2*tumour) = 1 liver, 2 tumour (tumour implies liver label).
    return np.maximum(liver.view(np.uint8), tumor.view(np.uint8) * np.uint8(2))


def _bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """Bounding box of the True voxels, padded by `pad` and clipped to the array; None when empty."""
    box: list[slice] = []
    sub = mask
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(np.any(sub, axis=other))
        if idx.size == 0:
            return None
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        # narrow the array as we go so later projections read less
        sub = sub[(slice(None),) * axis + (slice(lo, hi),)]
        box.append(slice(max(0, lo - pad), min(mask.shape[axis], hi + pad)))
    return tuple(box)


def _restrict_to_dilated(tumor: np.ndarray, liver: np.ndarray, radius: int) -> None:
    """In place: tumor &= dilate(liver, cube of half-width `radius`).

    Tumour outside the liver's box padded by `radius` is cleared outright; the dilation is evaluated only on
    the overlap of that padded box with the tumour's box.
    """
    tbox = _bbox(tumor)
    if tbox is None:
        return
    lbox = _bbox(liver, pad=radius)
    if lbox is None:
        tumor[tbox] = False
        return
    inner = tuple(slice(max(t.start, v.start), min(t.stop, v.stop)) for t, v in zip(tbox, lbox))
    if any(s.start >= s.stop for s in inner):
        tumor[tbox] = False
        return
    _clear_outside(tumor, tbox, inner)
    if radius == 0:
        tumor[inner] &= liver[inner]
        return
    outer = tuple(slice(max(0, s.start - radius), min(n, s.stop + radius)) for s, n in zip(inner, liver.shape))
    grown = ndimage.maximum_filter(liver[outer].view(np.uint8), size=2 * radius + 1, mode="constant", cval=0)
    rel = tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))
    tumor[inner] &= grown[rel].view(bool)


def _clear_outside(mask: np.ndarray, box: tuple[slice, ...], keep: tuple[slice, ...]) -> None:
    """mask[box] = False everywhere except inside the sub-box `keep` (both boxes in array coordinates)."""
    saved = mask[keep].copy()
    mask[box] = False
    mask[keep] = saved


def _keep_largest_component(liver: np.ndarray, tumor: np.ndarray) -> None:
    """In place: keep only the largest 26-connected component of liver | tumour in both masks."""
    full = liver | tumor
    box = _bbox(full)
    if box is None:
        return
    crop = full[box]
    lab, n = ndimage.label(crop, structure=_CONN26)
    if n <= 1:
        return
    sizes = np.bincount(lab[crop], minlength=n + 1)  # foreground voxels only: no full-box int64 copy
    sizes[0] = 0
    keep = lab == int(np.argmax(sizes))
    del lab
    liver[box] &= keep
    tumor[box] &= keep


def _remove_small_components(mask: np.ndarray, prob: np.ndarray, min_voxels: int, keep_confident: float) -> None:
    """In place: drop 26-connected components with fewer than `min_voxels` voxels, unless their peak `prob`
    reaches `keep_confident` (1.0: never)."""
    box = _bbox(mask)
    if box is None:
        return
    crop = mask[box]
    lab, n = ndimage.label(crop, structure=_CONN26)
    sizes = np.bincount(lab[crop], minlength=n + 1)
    lut = sizes >= min_voxels
    if keep_confident < 1.0 and not lut[1:].all():
        peak = np.zeros(n + 1, np.float32)
        np.maximum.at(peak, lab[crop], np.asarray(prob[box], np.float32)[crop])
        lut |= peak >= keep_confident
    lut[0] = False
    mask[box] = lut[lab]


def _fill_holes(mask: np.ndarray) -> None:
    """In place: fill 3D cavities (background 6-connectivity, as scipy.ndimage.binary_fill_holes).

    One labelling of the background of the padded bounding box instead of binary_fill_holes' iterated
    dilation (which needs as many passes as the widest cavity and crawls on 512x512 volumes).
    """
    box = _bbox(mask)
    if box is None:
        return
    crop = np.pad(mask[box], 1, mode="constant", constant_values=False)
    lab, _ = ndimage.label(~crop)  # default structure = 6-connectivity, as in binary_fill_holes
    outside = lab[(0,) * crop.ndim]  # the padding is background and connected to the outside
    mask[box] = lab[(slice(1, -1),) * crop.ndim] != outside  # object voxels (label 0) and enclosed holes


def predicted_lesions(pred_tumor: np.ndarray) -> tuple[np.ndarray, int]:
    """Predicted lesions: 6-connected components of the tumour mask (``scipy.ndimage.label`` default)."""
    labels, n = ndimage.label(np.asarray(pred_tumor, dtype=bool))
    return labels, int(n)


def count_lesions(pred_tumor: np.ndarray) -> int:
    """The number of `predicted_lesions`, labelled inside the tumour's bounding box only."""
    mask = np.asarray(pred_tumor, dtype=bool)
    box = _bbox(mask)
    return 0 if box is None else int(ndimage.label(mask[box])[1])
