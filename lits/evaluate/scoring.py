"""Score segmentations the LiTS way and write the reports.

Two sources of predictions, one scoring and reporting path:

* checkpoint mode, ``evaluate.py ckpt=PATH [split=test]``: rebuild model + preprocessing + split from the
  checkpoint alone, predict (optionally with flip TTA), and score every post-processing stage: the cumulative
  ablation (raw, + largest liver component, + hole filling, + tumour in liver, + small-tumour removal,
  + hysteresis; ``lits.infer.postprocess.ablation_stages``) and ``post``, the configured pipeline (``postprocess.*``).
  With ``tta=true`` also ``post_no_tta``: the configured pipeline on the identity view alone.
* predictions mode, ``evaluate.py predictions=DIR data=lits data.root=DIR``: score a folder of
  ``segmentation-N.nii[.gz]`` / ``test-segmentation-N.nii[.gz]`` from any tool against the references, as given
  (stage ``given``). Predictions must be on the reference's voxel grid (same shape and affine).

Run-dir outputs: cases.csv (every metric per case for raw and post, or given), ablation_cases.csv (every stage),
metrics.json (aggregates per stage), report.md (the tables), montages/case-N.png, tumor_dice_vs_volume.png;
predictions/ with save_predictions=true. TensorBoard: see ``lits.evaluate.report.tensorboard_dir``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lits.core.config import EvaluateConfig, PathsConfig, typed
from lits.core.errors import LitsError
from lits.core.files import write_atomic, write_bytes_atomic, write_csv, write_json
from lits.core.tables import format_table
from lits.evaluate.metrics import aggregate, case_metrics
from lits.evaluate.pictures import dice_volume_png
from lits.evaluate.report import CASE_COLUMNS, SUMMARY_KEYS, case_outputs, log_tensorboard, markdown
from lits.evaluate.sources import Source, open_source

log = logging.getLogger(__name__)

# stages whose per-case rows go to cases.csv; the others only to ablation_cases.csv
HEADLINE_STAGES = ("raw", "post", "given")


def evaluate(cfg) -> dict:
    """The evaluate task (evaluate.py): a composed evaluate config or EvaluateConfig in, the run folder's reports out;
    returns what metrics.json holds."""
    cfg = typed(EvaluateConfig, cfg)
    return score(cfg, open_source(cfg))


def evaluate_checkpoint(ckpt: Path, out_dir: Path, split: str, progress: bool = False) -> dict:
    """`python evaluate.py ckpt=CKPT split=SPLIT` into `out_dir`, from inside another task (train.py's
    `evaluate_after`): the checkpoint's own post-processing, every other setting at its default."""
    cfg = EvaluateConfig(
        ckpt=str(ckpt),
        split=split,
        progress=progress,
        paths=dataclasses.replace(PathsConfig(), output_dir=str(out_dir)),
    )
    log.info("evaluating %s on the %s split into %s", ckpt, split, out_dir)
    return evaluate(cfg)


def score_rows(cfg: EvaluateConfig, source: Source, out_dir: Path) -> dict[str, list[dict]]:
    """Every case through every stage of `source`: {stage: [metric row per case]}; the main stage's pictures and
    exports are written on the way."""
    rows: dict[str, list[dict]] = {name: [] for name, _ in source.stages}
    for case in tqdm(source.cases, desc="evaluating", unit="case", disable=not cfg.progress):
        # scored on the native canonical grid (the reference's voxels), also when the cache was resampled
        label, spacing = np.asarray(case.native_label), case.native_spacing
        voxel_ml = float(np.prod(spacing)) / 1000.0
        scored: dict[bytes, dict] = {}  # stages often leave the labels as they were: score each label map once
        for stage, pred, probs in source.predict(case):
            digest = hashlib.blake2b(np.ascontiguousarray(pred, dtype=np.uint8)).digest()
            if digest not in scored:
                scored[digest] = case_metrics(pred, label, spacing)
            row = {"case": case.case_id, "stage": stage, **scored[digest]}
            for s in ("liver", "tumor"):
                row[f"{s}_volume_ref_ml"] = row[f"{s}_ref_voxels"] * voxel_ml
                row[f"{s}_volume_pred_ml"] = row[f"{s}_pred_voxels"] * voxel_ml
            rows[stage].append(row)
            if stage == source.main:
                case_outputs(cfg, out_dir, source, case, label, pred, probs, row)
    return rows


def score(cfg: EvaluateConfig, source: Source) -> dict:
    """Score `source` and write cases.csv, ablation_cases.csv, metrics.json, report.md and pictures."""
    out_dir = Path(cfg.paths.output_dir)
    if not source.cases:  # e.g. data.on_error=skip left every case out
        raise LitsError(
            "no cases left to evaluate (see the log and skipped_cases.json in the run dir); "
            "fix the data or choose another split"
        )
    if cfg.save_predictions and source.main == "given":
        log.warning("save_predictions=true: nothing to save, the predictions are the files in %s", cfg.predictions)
    rows = score_rows(cfg, source, out_dir)
    summary = {stage: aggregate(stage_rows) for stage, stage_rows in rows.items()}
    result = {
        **source.info,
        "num_cases": len(source.cases),
        "main_stage": source.main,
        "stages": [{"name": n, "description": d} for n, d in source.stages],
        "postprocess": dataclasses.asdict(source.postprocess) if source.postprocess else None,
        **summary,
    }
    table_rows = [{"metric": k, **{s: summary[s].get(k) for s in summary}} for k in SUMMARY_KEYS]
    stage_table = format_table(table_rows, ["metric", *summary])
    case_table = format_table(rows[source.main], CASE_COLUMNS)

    write_csv(out_dir / "cases.csv", [r for s in rows if s in HEADLINE_STAGES for r in rows[s]])
    if len(rows) > 1:
        write_csv(out_dir / "ablation_cases.csv", [r for s in rows for r in rows[s]])
    split = source.info["split"] or "predictions"
    if cfg.report.plot:
        title = f"{split}, stage {source.main}: tumour Dice per case {summary[source.main]['tumor_dice_per_case']:.3f}"
        write_bytes_atomic(out_dir / "tumor_dice_vs_volume.png", dice_volume_png(rows[source.main], title))
    write_atomic(out_dir / "report.md", markdown(result, source, stage_table, case_table, cfg.report))
    write_json(out_dir / "metrics.json", result)
    if source.tensorboard is not None:
        log_tensorboard(*source.tensorboard, summary, stage_table, split)

    print(f"\n{len(source.cases)} cases, stage '{source.main}':")
    print(case_table)
    print("\nstages (" + ", ".join(f"{n}: {d}" for n, d in source.stages) + "); all metrics in metrics.json:")
    print(stage_table)
    print(f"wrote cases.csv, metrics.json, report.md and pictures to {out_dir}")
    return result
