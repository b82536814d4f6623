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
    LESION_SCORE_METRICS,
    PER_CASE_MEAN_KEYS,
    SEGMENTATION_KEYS,
    SENTINEL_METRICS,
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
    summed over the dataset, lesion-wise score means over detected lesions, and tumour-burden RMSE / max error.
    Extra keys in the rows (e.g. a case id) are ignored. Raises ValueError for no rows, a row missing a
    required key, or rows mixing detail levels.
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

    if _group_present(rows, SEGMENTATION_KEYS, "segmentation"):
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

    if _group_present(rows, LESION_KEYS, "lesion"):
        for t in DETECTION_THRESHOLDS:
            tp = sum(int(row[f"tumor_lesion_tp_{t}"]) for row in rows)
            fp = sum(int(row[f"tumor_lesion_fp_{t}"]) for row in rows)
            fn = sum(int(row[f"tumor_lesion_fn_{t}"]) for row in rows)
            out[f"tumor_lesion_precision_{t}"] = tp / (tp + fp) if tp + fp else 0.0
            out[f"tumor_lesion_recall_{t}"] = tp / (tp + fn) if tp + fn else 0.0
            out[f"tumor_lesion_tp_{t}"], out[f"tumor_lesion_fp_{t}"], out[f"tumor_lesion_fn_{t}"] = tp, fp, fn
        out["tumor_lesion_merge_errors"] = sum(int(row["tumor_lesion_merge_errors"]) for row in rows)
        out["tumor_lesion_split_errors"] = sum(int(row["tumor_lesion_split_errors"]) for row in rows)
        out["tumor_lesion_fp_in_tumor_free_cases"] = sum(
            int(row["tumor_lesions_pred"]) for row in rows if int(row["tumor_lesions_ref"]) == 0
        )
        n_scored = sum(int(row["tumor_lesion_tp_iou0"]) for row in rows)
        for m in LESION_SCORE_METRICS:
            total = sum(float(row[f"tumor_lesion_{m}_sum"]) for row in rows)
            out[f"tumor_lesion_{m}_mean"] = total / n_scored if n_scored else math.nan

    if _group_present(rows, BURDEN_KEYS, "tumour burden"):
        errors = [float(row["tumor_burden_error"]) for row in rows]
        finite = np.array([e for e in errors if e != LARGE and math.isfinite(e)], dtype=np.float64)
        out["tumor_burden_rmse"] = float(np.sqrt(np.mean(np.square(finite)))) if finite.size else math.nan
        out["tumor_burden_max_error"] = float(finite.max()) if finite.size else math.nan
        out["tumor_burden_max_abs_error"] = float(np.abs(finite).max()) if finite.size else math.nan
        out["tumor_burden_sentinel_cases"] = len(errors) - int(finite.size)
    return out
