"""The metric vocabulary: every metric a reader sees, named once -- its key, its words, which way is better, how it is
printed -- and the validation metrics as the evaluation aggregates they are.

Two kinds of key:
* evaluation keys (`METRICS`): a case's row in cases.csv (`tumor_dice`, ...) and a stage's aggregate in
  metrics.json (`tumor_dice_per_case`, ...), as `lits.evaluate.metrics` computes them;
* validation keys (`VALIDATION`, `DERIVED`): what training's validation logs to history.jsonl, TensorBoard and the
  console (`val/tumor_dice_post`, ...); each is an aggregate of the raw or post-processed stage, or derived from
  them (`lesion_f1`, `lesion_score`, computed here and nowhere else).

Validation, tuning, the monitors (`trainer.monitor`), TensorBoard tags, the console's tables, report.md, report.html
and scripts/compare_runs.py read their names and words from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    label: str  # the words in reports, tiles and legends
    short: str  # a column heading in the console's narrow tables
    higher_is_better: bool | None  # None: a count, volume or signed error, neither way better
    digits: int = 3  # decimals of a float in tables


def _m(label: str, short: str | None = None, higher: bool | None = True, digits: int = 3) -> Metric:
    return Metric(label, short or label, higher, digits)


# columns that name a row, not a metric
IDENTIFIERS = {"case": "case", "stage": "stage"}

METRICS: dict[str, Metric] = {
    # a case's row (cases.csv; the tables show these)
    "liver_dice": _m("liver Dice"),
    "tumor_dice": _m("tumour Dice"),
    "tumor_volume_ref_ml": _m("tumour ml (reference)", "tumour ml ref", None, 1),
    "tumor_volume_pred_ml": _m("tumour ml (predicted)", "tumour ml pred", None, 1),
    "tumor_assd": _m("tumour ASSD mm", higher=False, digits=1),
    "tumor_lesions_ref": _m("lesions", higher=None, digits=0),
    "tumor_lesion_tp_iou50": _m("found (IoU > 0.5)", "found", digits=0),
    "tumor_lesion_fp_iou50": _m("extra (IoU > 0.5)", "extra", False, 0),
    "tumor_burden_ref": _m("burden (reference)", "burden ref", None),
    "tumor_burden_pred": _m("burden (predicted)", "burden pred", None),
    # a stage's aggregates (metrics.json)
    "liver_dice_per_case": _m("liver Dice per case", "liver Dice"),
    "liver_dice_global": _m("liver Dice global", "liver global"),
    "liver_voe_mean": _m("liver VOE", higher=False),
    "liver_rvd_mean": _m("liver RVD", higher=None),
    "liver_assd_mean": _m("liver ASSD mm", higher=False, digits=1),
    "liver_msd_mean": _m("liver MSD mm", higher=False, digits=1),
    "liver_rmsd_mean": _m("liver RMSD mm", higher=False, digits=1),
    "tumor_dice_per_case": _m("tumour Dice per case", "tumour Dice"),
    "tumor_dice_global": _m("tumour Dice global", "tumour global"),
    "tumor_voe_mean": _m("tumour VOE", higher=False),
    "tumor_rvd_mean": _m("tumour RVD", higher=None),
    "tumor_assd_mean": _m("tumour ASSD mm", higher=False, digits=1),
    "tumor_msd_mean": _m("tumour MSD mm", higher=False, digits=1),
    "tumor_rmsd_mean": _m("tumour RMSD mm", higher=False, digits=1),
    "tumor_assd_sentinel_cases": _m("cases without a tumour surface (9001)", "no surface", None, 0),
    "tumor_lesion_recall_iou50": _m("lesion recall (IoU > 0.5)", "lesion recall"),
    "tumor_lesion_precision_iou50": _m("lesion precision (IoU > 0.5)", "lesion precision"),
    "tumor_lesion_recall_iou0": _m("lesion recall (any overlap)", "recall IoU>0"),
    "tumor_lesion_precision_iou0": _m("lesion precision (any overlap)", "precision IoU>0"),
    "tumor_burden_rmse": _m("tumour burden RMSE", "burden RMSE", False),
    "tumor_burden_max_abs_error": _m("tumour burden max error", "burden max err", False),
}

# what validation logs, as (stage, evaluation key): the same aggregate evaluate.py writes for that stage
VALIDATION: dict[str, tuple[str, str]] = {
    "val/liver_dice": ("raw", "liver_dice_per_case"),
    "val/tumor_dice": ("raw", "tumor_dice_per_case"),
    "val/tumor_dice_global": ("raw", "tumor_dice_global"),
    "val/liver_dice_post": ("post", "liver_dice_per_case"),
    "val/liver_dice_global_post": ("post", "liver_dice_global"),
    "val/tumor_dice_post": ("post", "tumor_dice_per_case"),
    "val/tumor_dice_global_post": ("post", "tumor_dice_global"),
    "val/lesion_recall_iou50": ("post", "tumor_lesion_recall_iou50"),
    "val/lesion_precision_iou50": ("post", "tumor_lesion_precision_iou50"),
    "val/lesion_recall_iou0": ("post", "tumor_lesion_recall_iou0"),
    "val/lesion_precision_iou0": ("post", "tumor_lesion_precision_iou0"),
}
# validation metrics computed from those (post-processed stage)
DERIVED: dict[str, Metric] = {
    "val/lesion_f1_iou50": _m("lesion F1 (IoU > 0.5)", "lesion F1"),
    "val/lesion_score": _m("lesion score (mean of tumour Dice per case and lesion F1)", "lesion score"),
}
STAGE_WORDS = {"raw": "raw", "post": "post-processed"}


def describe(key: str) -> Metric:
    """The words and direction of an evaluation or validation key; a key named nowhere here is an error."""
    if key in METRICS:
        return METRICS[key]
    if key in DERIVED:
        return DERIVED[key]
    if key in VALIDATION:
        stage, source = VALIDATION[key]
        metric = METRICS[source]
        if stage == "raw":
            return Metric(f"{metric.label}, raw", f"{metric.short} raw", metric.higher_is_better, metric.digits)
        return Metric(f"{metric.label}, post-processed", metric.short, metric.higher_is_better, metric.digits)
    raise KeyError(f"{key}: not a metric of lits.core.vocabulary")


def heading(key: str, short: bool = False) -> str:
    """A table's column heading for `key` (a metric, or `case` / `stage`)."""
    if key in IDENTIFIERS:
        return IDENTIFIERS[key]
    metric = describe(key)
    return metric.short if short else metric.label


def decimals(key: str) -> int:
    """Decimals of a float under `key` in a table: the metric's own, or 3 for a table's own columns that are not
    metrics here (per size bin rates, thresholds of a curve)."""
    return describe(key).digits if key in METRICS or key in VALIDATION or key in DERIVED else 3


def lesion_f1(recall: float, precision: float) -> float:
    """F1 of lesion detection (0 when nothing is found)."""
    return 2 * recall * precision / (recall + precision) if recall + precision else 0.0


def lesion_score(summary: dict) -> float:
    """The mean of tumour Dice per case and lesion F1 at IoU > 0.5 of one stage's aggregates: a criterion that rewards
    finding lesions as much as outlining them (the default monitor and tuning criterion)."""
    f1 = lesion_f1(summary["tumor_lesion_recall_iou50"], summary["tumor_lesion_precision_iou50"])
    return (summary["tumor_dice_per_case"] + f1) / 2


def validation_metrics(summaries: dict[str, dict]) -> dict[str, float]:
    """Every VALIDATION and DERIVED key from the stages' aggregates ({"raw": ..., "post": ...})."""
    out = {key: summaries[stage][source] for key, (stage, source) in VALIDATION.items()}
    post = summaries["post"]
    out["val/lesion_f1_iou50"] = lesion_f1(post["tumor_lesion_recall_iou50"], post["tumor_lesion_precision_iou50"])
    out["val/lesion_score"] = lesion_score(post)
    return out


# what trainer.monitor may name: every validation metric for which higher is better
MONITORS: tuple[str, ...] = tuple(
    key for key in (*VALIDATION, *DERIVED) if describe(key).higher_is_better
)  # fmt: skip
