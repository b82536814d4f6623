"""How a network outlines the lesions it finds: each reference lesion of a scored split is missed, found with
IoU > 0.5, or found (some overlap) but outlined too small, too large, or merged with a neighbour into one group.

Growing predictions (hysteresis) can only raise recall at IoU > 0.5 through the lesions outlined too small; the
size filter only through small ones found at all. Lesions and groups are the scorer's (`match_lesions`), counted per
reference lesion (a merged group of three counts three). Given the tumour probabilities, it also counts the reference
voxels that a too-small outline leaves out, and how many of them reach hysteresis's low threshold: growth can only
add those (if they touch the outline).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np

from lits.core.config.infer import PostprocessConfig
from lits.data.nifti import to_canonical
from lits.data.sources import discover
from lits.evaluate.metrics.keys import DETECTION_THRESHOLDS, SIZE_BINS
from lits.evaluate.metrics.lesions import equivalent_diameter_mm, match_lesions, reference_lesions, size_bin
from lits.infer.postprocess import predicted_lesions

CLASSES = ("IoU > 0.5", "too small", "too large", "merged", "missed")
LEFT_OUT, REACHABLE = "too small: voxels left out", "too small: left out, p >= low"
TUMOUR = 2  # the LiTS label of tumour
LOW = PostprocessConfig().hysteresis_low  # the threshold hysteresis grows to
UNDER_10MM = next(iter(SIZE_BINS))  # the size-bin metrics' first bin, lesions under 10 mm
SMALL = "under 10 mm: "


def outline_classes(
    pred_tumor: np.ndarray, ref_tumor: np.ndarray, tumor_prob: np.ndarray | None = None, voxel_mm3: float | None = None
) -> Counter:
    """Reference lesions of one case per class of CLASSES (boolean tumour masks of the same shape); with
    `tumor_prob`, also the LEFT_OUT reference voxels of too-small lesions and how many of them are REACHABLE; with
    `voxel_mm3`, also per class the lesions under 10 mm equivalent diameter (keys SMALL + class), each lesion sized
    on its own as the size-bin metrics do."""
    p_lab, _ = predicted_lesions(pred_tumor)
    r_lab, _ = reference_lesions(ref_tumor)
    match = match_lesions(p_lab, r_lab)
    counts = Counter(dict.fromkeys(CLASSES, 0))
    kind_of = {}
    for group in match.groups:
        if group.iou > DETECTION_THRESHOLDS["iou50"]:
            kind = "IoU > 0.5"
        elif len(group.ref_ids) > 1:
            kind = "merged"
        else:
            kind = "too small" if group.pred_voxels < group.ref_voxels else "too large"
        kind_of.update(dict.fromkeys(group.ref_ids, kind))
        if kind == "too small" and tumor_prob is not None:
            left_out = np.isin(r_lab, group.ref_ids) & ~pred_tumor
            counts[LEFT_OUT] += int(left_out.sum())
            counts[REACHABLE] += int((tumor_prob[left_out] >= LOW).sum())
    sizes = np.bincount(r_lab.ravel())
    for lesion in np.flatnonzero(sizes[1:]) + 1:
        kind = kind_of.get(int(lesion), "missed")
        counts[kind] += 1
        if voxel_mm3 is not None and size_bin(float(equivalent_diameter_mm(sizes[lesion] * voxel_mm3))) == UNDER_10MM:
            counts[SMALL + kind] += 1
    return counts


def split_outlines(predictions: Path, labels: dict[str, Path], case_ids: list[str]) -> Counter:
    """The classes summed over `case_ids`: evaluate.py's exported label maps (predictions/test-segmentation-<id>.nii,
    save_predictions=true) against each case's reference in `labels` (case id -> segmentation file), both read
    slice-major; with their tumour probabilities where save_probabilities=true wrote them beside, and lesions sized by
    the reference's voxel size."""
    total = Counter(dict.fromkeys(CLASSES, 0))
    for case in case_ids:
        pred = _tumour(predictions / f"test-segmentation-{case}.nii")
        if case not in labels:
            raise SystemExit(f"error: case {case} has no segmentation in the checkpoint's data.root any more")
        ref = _tumour(labels[case])
        voxel_mm3 = float(np.prod(nib.load(labels[case]).header.get_zooms()[:3]))
        if pred.shape != ref.shape:
            raise SystemExit(f"error: {predictions} case {case}: prediction {pred.shape} against reference {ref.shape}")
        prob_path = predictions / f"test-segmentation-{case}_probabilities.nii.gz"
        prob = _tumour_probability(prob_path) if prob_path.is_file() else None
        total.update(outline_classes(pred, ref, prob, voxel_mm3))
    return total


def case_labels(data: dict) -> dict[str, Path]:
    """Case id -> segmentation file of a checkpoint's `data` config (any data.layout: LiTS, MSD or CSV)."""
    cases, _ = discover(SimpleNamespace(layout=data["layout"], root=data["root"]))
    return {c.case_id: Path(c.label) for c in cases if c.label is not None}


def _tumour(path: Path) -> np.ndarray:
    """The tumour mask of a label file, slice-major (Z, Y, X) as the lesion functions expect (axial planes last)."""
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing; rerun the evaluation with save_predictions=true")
    image = nib.load(path)
    labels, _ = to_canonical(np.asarray(image.dataobj), image.affine)
    return labels == TUMOUR


def _tumour_probability(path: Path) -> np.ndarray:
    """The tumour channel of an exported (X, Y, Z, 2) probability map, slice-major."""
    image = nib.load(path)
    prob, _ = to_canonical(np.asarray(image.dataobj[..., 1], dtype=np.float32), image.affine)  # scaled by nibabel
    return prob
