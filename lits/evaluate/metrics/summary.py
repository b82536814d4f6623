"""Dataset summary of per-case metric rows: means, global Dice, detection precision/recall, burden errors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from lits.evaluate.metrics.keys import (
    BURDEN_KEYS,
    COUNT_KEYS,
    DETECTION_THRESHOLDS,
    GLOBAL_DICE,
    LARGE,
    LESION_KEYS,
    LESION_SCORE_KEYS,
    LESION_SCORE_METRICS,
    PER_CASE_MEAN_KEYS,
    SEGMENTATION_KEYS,
    SENTINEL_METRICS,
    SIZE_BIN_KEYS,
    SIZE_BINS,
)
from lits.evaluate.metrics.overlap import dice_from_counts


def _finite_mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _group_present(rows: Sequence[Mapping[str, float]], keys: Sequence[str], name: str) -> bool:
    have = [all(k in row for k in keys) for row in rows]
    if any(have) and not all(have):
        k = have.index(False)
        missing = [key for key in keys if key not in rows[k]]
        raise ValueError(
            f"aggregate: case {k} lacks the {name} keys {missing} that other cases have "
            f"(mix of detail='dice' and detail='full' rows?)"
        )
    return all(have)


def aggregate(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Dataset summary of `case_metrics` rows (keys in the package docstring).

    Always: ``num_cases``, ``<key>_per_case`` = mean over cases of ``liver_dice``/``tumor_dice``,
    ``<s>_dice_global`` = ``2 * sum(intersection) / sum(pred + ref)``. Rows from ``detail="full"`` add the
    segmentation means (sentinel values excluded and counted), lesion detection precision/recall from counts
    summed over the dataset, lesion-wise score means over detected lesions, recall and Dice per lesion size bin,
    and tumour-burden RMSE / max error (``detail="lesions"`` rows: detection and size bins). Extra keys in the rows
    (e.g. a case id) are ignored. Raises ValueError for no rows, a row missing a required key, or rows mixing
    detail levels.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("aggregate: no cases to summarise")
    required = PER_CASE_MEAN_KEYS + COUNT_KEYS
    for k, row in enumerate(rows):
        missing = [key for key in required if key not in row]
        if missing:
            raise ValueError(f"aggregate: case {k} lacks {missing}; rows must come from case_metrics")
    out: dict[str, float] = {"num_cases": len(rows)}
    for key in PER_CASE_MEAN_KEYS:
        out[f"{key}_per_case"] = float(np.mean([float(row[key]) for row in rows]))
    for s, empty in GLOBAL_DICE.items():
        i = sum(int(row[f"{s}_intersection"]) for row in rows)
        p = sum(int(row[f"{s}_pred_voxels"]) for row in rows)
        r = sum(int(row[f"{s}_ref_voxels"]) for row in rows)
        out[f"{s}_dice_global"] = dice_from_counts(i, p, r, empty)
    groups = ((SEGMENTATION_KEYS, "segmentation", _segmentation), (LESION_KEYS, "lesion", _detection),
              (LESION_SCORE_KEYS, "lesion-wise score", _lesion_scores), (SIZE_BIN_KEYS, "size-bin", _size_bins),
              (BURDEN_KEYS, "tumour burden", _burden))  # fmt: skip
    for keys, name, summarise in groups:
        if _group_present(rows, keys, name):
            out.update(summarise(rows))
    return out


def _total(rows: Sequence[Mapping[str, float]], key: str) -> float:
    return sum(float(row[key]) for row in rows)


def _segmentation(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in GLOBAL_DICE:
        out[f"{s}_voe_mean"] = float(np.mean([float(row[f"{s}_voe"]) for row in rows]))
        for m in SENTINEL_METRICS:
            values = [float(row[f"{s}_{m}"]) for row in rows]
            finite = [v for v in values if v != LARGE and math.isfinite(v)]
            out[f"{s}_{m}_mean"] = _finite_mean(finite)
            out[f"{s}_{m}_sentinel_cases"] = len(values) - len(finite)
    out["tumor_both_empty_cases"] = sum(
        1 for row in rows if int(row["tumor_pred_voxels"]) == 0 and int(row["tumor_ref_voxels"]) == 0
    )
    return out


def _detection(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in DETECTION_THRESHOLDS:
        tp, fp, fn = (int(_total(rows, f"tumor_lesion_{c}_{t}")) for c in ("tp", "fp", "fn"))
        out[f"tumor_lesion_precision_{t}"] = tp / (tp + fp) if tp + fp else 0.0
        out[f"tumor_lesion_recall_{t}"] = tp / (tp + fn) if tp + fn else 0.0
        out[f"tumor_lesion_tp_{t}"], out[f"tumor_lesion_fp_{t}"], out[f"tumor_lesion_fn_{t}"] = tp, fp, fn
    out["tumor_lesion_merge_errors"] = int(_total(rows, "tumor_lesion_merge_errors"))
    out["tumor_lesion_split_errors"] = int(_total(rows, "tumor_lesion_split_errors"))
    out["tumor_lesion_fp_in_tumor_free_cases"] = sum(
        int(row["tumor_lesions_pred"]) for row in rows if int(row["tumor_lesions_ref"]) == 0
    )
    return out


def _lesion_scores(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    n_scored = _total(rows, "tumor_lesion_tp_iou0")
    return {
        f"tumor_lesion_{m}_mean": _total(rows, f"tumor_lesion_{m}_sum") / n_scored if n_scored else math.nan
        for m in LESION_SCORE_METRICS
    }


def _size_bins(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per bin: reference lesions, the share detected at each threshold and their mean Dice (NaN for an empty bin)."""
    out: dict[str, float] = {}
    for b in SIZE_BINS:
        n = int(_total(rows, f"tumor_lesion_ref_{b}"))
        out[f"tumor_lesion_ref_{b}"] = n
        for t in DETECTION_THRESHOLDS:
            out[f"tumor_lesion_recall_{t}_{b}"] = _total(rows, f"tumor_lesion_tp_{t}_{b}") / n if n else math.nan
        out[f"tumor_lesion_dice_{b}"] = _total(rows, f"tumor_lesion_dice_sum_{b}") / n if n else math.nan
    return out


def _burden(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    errors = [float(row["tumor_burden_error"]) for row in rows]
    finite = np.array([e for e in errors if e != LARGE and math.isfinite(e)], dtype=np.float64)
    return {
        "tumor_burden_rmse": float(np.sqrt(np.mean(np.square(finite)))) if finite.size else math.nan,
        "tumor_burden_max_error": float(finite.max()) if finite.size else math.nan,
        "tumor_burden_max_abs_error": float(np.abs(finite).max()) if finite.size else math.nan,
        "tumor_burden_sentinel_cases": len(errors) - int(finite.size),
    }
