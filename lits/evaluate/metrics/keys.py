"""The metric row schema shared by `case_metrics` and `aggregate`: sentinels, empty scores and key tables.

The conventions behind these values are in the ``lits.evaluate.metrics`` package docstring.
"""

from __future__ import annotations

# Per-case score when prediction and reference are both empty (official scorer, see the package docstring).
LIVER_EMPTY_SCORE = 0.0
TUMOR_EMPTY_SCORE = 1.0

# The scorer's value for a surface metric (and RVD, tumour burden) when a mask is empty.
LARGE = 9001.0

# structure name -> empty score; each structure yields <s>_dice, <s>_intersection, <s>_pred_voxels,
# <s>_ref_voxels per case and <s>_dice_global in the summary.
GLOBAL_DICE: dict[str, float] = {"liver": LIVER_EMPTY_SCORE, "tumor": TUMOR_EMPTY_SCORE}

# Per-case keys averaged over cases by `aggregate` (reported as <key>_per_case).
PER_CASE_MEAN_KEYS: tuple[str, ...] = ("liver_dice", "tumor_dice")

COUNT_KEYS: tuple[str, ...] = tuple(
    f"{s}_{c}" for s in GLOBAL_DICE for c in ("intersection", "pred_voxels", "ref_voxels")
)

# Segmentation scores per structure: <s>_voe is always finite (mean over cases); the others carry the
# LARGE sentinel when a mask is empty (mean over finite cases + count of sentinel cases).
SURFACE_METRICS: tuple[str, ...] = ("assd", "msd", "rmsd")
SENTINEL_METRICS: tuple[str, ...] = ("rvd",) + SURFACE_METRICS
SEGMENTATION_KEYS: tuple[str, ...] = tuple(f"{s}_{m}" for s in GLOBAL_DICE for m in ("voe",) + SENTINEL_METRICS)

# Lesion detection: key suffix -> IoU a matched group must exceed to count as detected.
DETECTION_THRESHOLDS: dict[str, float] = {"iou50": 0.5, "iou0": 0.0}
# Lesion-wise segmentation scores, summed per case over reference lesions detected at IoU > 0.
LESION_SCORE_METRICS: tuple[str, ...] = ("dice", "voe", "rvd") + SURFACE_METRICS
LESION_KEYS: tuple[str, ...] = (
    ("tumor_lesions_ref", "tumor_lesions_pred")
    + tuple(f"tumor_lesion_{c}_{t}" for t in DETECTION_THRESHOLDS for c in ("tp", "fp", "fn"))
    + ("tumor_lesion_merge_errors", "tumor_lesion_split_errors")
)
LESION_SCORE_KEYS: tuple[str, ...] = tuple(f"tumor_lesion_{m}_sum" for m in LESION_SCORE_METRICS)
# Reference lesions by equivalent diameter (mm) of a sphere of their volume: name -> [low, high). Per bin and case:
# how many, how many detected at each IoU threshold, and the sum of their Dice (the Dice of the group a lesion is
# matched in; 0 for a lesion no prediction touches).
SIZE_BINS: dict[str, tuple[float, float]] = {"under10mm": (0.0, 10.0), "10to20mm": (10.0, 20.0),
                                             "over20mm": (20.0, float("inf"))}  # fmt: skip
SIZE_BIN_COUNTS: tuple[str, ...] = ("ref", *(f"tp_{t}" for t in DETECTION_THRESHOLDS), "dice_sum")
SIZE_BIN_KEYS: tuple[str, ...] = tuple(f"tumor_lesion_{c}_{b}" for b in SIZE_BINS for c in SIZE_BIN_COUNTS)
BURDEN_KEYS: tuple[str, ...] = ("tumor_burden_pred", "tumor_burden_ref", "tumor_burden_error")

DETAILS = ("full", "lesions", "dice")  # everything | overlap + lesion detection + size bins | overlap only
