"""Dense-CRF refinement of the network's probabilities (Kraehenbuehl and Koltun, "Efficient Inference in Fully
Connected CRFs with Gaussian Edge Potentials", NeurIPS 2011), the optional last step of the published LiTS recipe.

Slice by slice, with the maintained `pydensecrf2` package (`pip install -e ".[crf]"`): three labels (background,
liver without tumour, tumour) whose unaries come from the two sigmoid heads, a smoothness kernel (sxy 3, weight 3) and
a bilateral kernel on the HU window (`postprocess.crf_sxy`, `crf_srgb`, `crf_weight`). Only slices and the in-plane
box where the liver head sees anything are refined; the refined marginals replace the probabilities, and the rest of
post-processing (thresholds, components) runs on them. evaluate.py reports it as its own stage, so validation decides
whether it is worth keeping.
"""

from __future__ import annotations

import numpy as np

from lits.core.config import PostprocessConfig
from lits.core.errors import LitsError

_SEEN = 0.05  # a slice is refined when its liver or tumour probability exceeds this somewhere
_EPS = 1e-6


def _densecrf():
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        raise LitsError('postprocess.crf=true needs pydensecrf2: pip install -e ".[crf]" (or set crf=false)') from None
    return dcrf


def _labels_from_heads(liver: np.ndarray, tumor: np.ndarray) -> np.ndarray:
    """(3, ...) distribution over background, liver-only and tumour from the liver (>= 1) and tumour (== 2) heads."""
    tumour = np.minimum(tumor, liver)  # tumour is part of the liver
    probs = np.stack([1.0 - liver, liver - tumour, tumour]).astype(np.float32)
    probs = np.clip(probs, _EPS, 1.0)
    return probs / probs.sum(axis=0, keepdims=True)


def refine_slice(image: np.ndarray, liver: np.ndarray, tumor: np.ndarray, cfg: PostprocessConfig):
    """One (Y, X) slice: refined (liver, tumour) probabilities."""
    dcrf = _densecrf()
    height, width = image.shape
    probs = _labels_from_heads(liver, tumor)
    crf = dcrf.DenseCRF2D(width, height, 3)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probs).reshape(3, -1)))
    crf.addPairwiseGaussian(sxy=3, compat=3)
    grey = np.clip(np.asarray(image, np.float32) * 255.0, 0, 255).astype(np.uint8)
    rgb = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    crf.addPairwiseBilateral(sxy=cfg.crf_sxy, srgb=cfg.crf_srgb, rgbim=rgb, compat=cfg.crf_weight)
    marginals = np.asarray(crf.inference(cfg.crf_iterations), np.float32).reshape(3, height, width)
    return marginals[1] + marginals[2], marginals[2]


def refine(image: np.ndarray, liver_prob: np.ndarray, tumor_prob: np.ndarray, cfg: PostprocessConfig):
    """(Z, Y, X) volumes: refined copies of the liver and tumour probabilities (float32)."""
    liver_out = np.array(liver_prob, dtype=np.float32)
    tumor_out = np.array(tumor_prob, dtype=np.float32)
    seen = (liver_out > _SEEN) | (tumor_out > _SEEN)
    for z in np.flatnonzero(seen.any(axis=(1, 2))):
        ys, xs = np.flatnonzero(seen[z].any(axis=1)), np.flatnonzero(seen[z].any(axis=0))
        box = (slice(max(0, ys[0] - 8), ys[-1] + 9), slice(max(0, xs[0] - 8), xs[-1] + 9))
        image_z = np.asarray(image[z], np.float32)[box]
        liver_out[z][box], tumor_out[z][box] = refine_slice(image_z, liver_out[z][box], tumor_out[z][box], cfg)
    return liver_out, tumor_out
