"""Score segmentations the LiTS way and write the reports.

Two sources of predictions, one scoring and reporting path:

* checkpoint mode, ``evaluate.py ckpt=PATH [split=test]``: rebuild model + preprocessing + split from the
  checkpoint alone, predict (optionally with flip TTA), and score every post-processing stage: the pipeline as
  applied (raw, then each step ``postprocess.*`` switches on, in order), ``post`` (the configured pipeline) last,
  then the candidates ``post+<step>``: post with one step it leaves off (``lits.infer.postprocess.pipeline_stages``).
  With ``tta=true`` also ``post_no_tta``: the configured pipeline on the identity view alone.
* predictions mode, ``evaluate.py predictions=DIR data=lits data.root=DIR``: score a folder of
  ``segmentation-N.nii[.gz]`` / ``test-segmentation-N.nii[.gz]`` from any tool against the references, as given
  (stage ``given``). Predictions must be on the reference's voxel grid (same shape and affine).

Run-dir outputs: cases.csv (every metric per case for raw and post, or given), ablation_cases.csv (every stage),
metrics.json (aggregates per stage and the headline), report.md and report.html (the tables and pictures),
montages/case-N.png, tumor_dice_vs_volume.png, training_progress.png (the checkpoint's run's learning curves);
predictions/ with save_predictions=true. TensorBoard: see ``lits.evaluate.report.tensorboard_dir``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lits.core.cli import mark_started
from lits.core.config import EvaluateConfig, PathsConfig, typed
from lits.core.errors import LitsError
from lits.core.files import write_atomic, write_bytes_atomic, write_csv, write_json
from lits.evaluate.detection import case_curve, curve, curve_png
from lits.evaluate.headline import headline, tumor_free, worst_first
from lits.evaluate.html import report_html
from lits.evaluate.metrics import aggregate, case_metrics
from lits.evaluate.pictures import dice_volume_png
from lits.evaluate.report import (
    CASE_COLUMNS,
    CONSOLE_CASE_COLUMNS,
    CONSOLE_STAGE_COLUMNS,
    NOT_AVAILABLE,
    case_outputs,
    full_stage_table,
    has_sentinel,
    log_tensorboard,
    markdown,
    text_table,
    training_picture,
)
from lits.evaluate.sources import Source, open_source
from lits.evaluate.tuning import tune, write_tuning_files
from lits.infer.checkpoint import checkpoint_file

log = logging.getLogger(__name__)

# stages whose per-case rows go to cases.csv; the others only to ablation_cases.csv
HEADLINE_STAGES = ("raw", "post", "given")


def evaluate(cfg) -> dict:
    """The evaluate task (evaluate.py): a composed evaluate config or EvaluateConfig in, the run folder's reports out;
    returns what metrics.json holds."""
    cfg = typed(EvaluateConfig, cfg)
    if cfg.ckpt is not None and cfg.predictions is None and cfg.data is None:  # a run folder means its best.pt
        cfg = dataclasses.replace(cfg, ckpt=str(checkpoint_file(cfg.ckpt)))
    if cfg.tune:  # before the source is opened: it then reads the tuned checkpoint
        write_tuning_files(Path(cfg.paths.output_dir), tune(cfg))
        mark_started()  # the checkpoint is tuned: a later failure keeps the run folder (lits.core.cli)
    source = open_source(cfg)
    mark_started()
    return score(cfg, source)


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


def score_rows(cfg: EvaluateConfig, source: Source, out_dir: Path) -> tuple[dict[str, list[dict]], list]:
    """Every case through every stage of `source`: {stage: [metric row per case]}, and per case the lesion detection
    curve of the main stage (checkpoint mode); the main stage's pictures and exports are written on the way."""
    rows: dict[str, list[dict]] = {name: [] for name, _ in source.stages}
    curves = []
    post = source.postprocess
    with_curve = cfg.detection_curve and post is not None and not post.crf  # the CRF is too slow to run 9 times
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
                if with_curve and probs is not None:
                    curves.append(case_curve(probs, label, post, spacing))
    return rows, curves


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
    rows, curves = score_rows(cfg, source, out_dir)
    summary = {stage: aggregate(stage_rows) for stage, stage_rows in rows.items()}
    main = summary[source.main]
    result = {
        **source.info,
        "num_cases": len(source.cases),
        "main_stage": source.main,
        "stages": [{"name": n, "description": d} for n, d in source.stages],
        "postprocess": dataclasses.asdict(source.postprocess) if source.postprocess else None,
        "tumor_free": tumor_free(rows[source.main]),
        "montage_order": worst_first(rows[source.main]),
        **summary,
    }
    result["headline"] = headline(result, main)
    tables = {
        "stages": full_stage_table(summary),
        "cases": text_table(rows[source.main], [(c, c) for c in CASE_COLUMNS]),
    }
    if curves:
        result["detection_curve"] = curve(curves)
        title = f"lesion detection, stage {source.main}, {len(curves)} cases"
        png = curve_png(result["detection_curve"], source.postprocess.tumor_cut, title)
        write_bytes_atomic(out_dir / "detection_curve.png", png)
    write_csv(out_dir / "cases.csv", [r for s in rows if s in HEADLINE_STAGES for r in rows[s]])
    if len(rows) > 1:
        write_csv(out_dir / "ablation_cases.csv", [r for s in rows for r in rows[s]])
    split = source.info["split"] or "predictions"
    pictures = {
        "dice_volume": None,
        "training": training_picture(out_dir, source.training),
        "detection_curve": "detection_curve.png" if curves else None,
        "reliability": "reliability.png" if cfg.tune else None,
    }
    if cfg.report.plot:
        title = f"{split}, stage {source.main}: tumour Dice per case {main['tumor_dice_per_case']:.3f}"
        write_bytes_atomic(out_dir / "tumor_dice_vs_volume.png", dice_volume_png(rows[source.main], title))
        pictures["dice_volume"] = "tumor_dice_vs_volume.png"
    write_atomic(out_dir / "report.md", markdown(result, source, tables, pictures, cfg.report))
    write_atomic(out_dir / "report.html", report_html(result, source, summary, rows[source.main], out_dir, pictures))
    write_json(out_dir / "metrics.json", result)
    if source.tensorboard is not None:
        log_tensorboard(*source.tensorboard, main, source.main, tables, split)
    print_results(result, source, summary, rows[source.main], out_dir)
    return result


def print_results(result: dict, source: Source, summary: dict, rows: list[dict], out_dir: Path) -> None:
    """The console: the headline first, then the cases and the stages in tables no wider than 120 characters; the
    same text heads the run's evaluate.log."""
    stage_rows = [{"stage": name, **summary[name]} for name, _ in source.stages]
    lines = [result["headline"], text_table(rows, CONSOLE_CASE_COLUMNS), text_table(stage_rows, CONSOLE_STAGE_COLUMNS)]
    if has_sentinel(rows, [k for k, _ in CONSOLE_CASE_COLUMNS]):
        lines.append(NOT_AVAILABLE)
    lines.append(
        f"stages: {', '.join(n for n, _ in source.stages)} (report.md describes them); every metric: cases.csv"
    )
    lines.append(f"wrote report.html, report.md, cases.csv, metrics.json and pictures to {out_dir}")
    text = "\n".join(lines)
    print(text)
    _head_the_log(text)


def _head_the_log(text: str) -> None:
    """Put `text` at the top of the run's log file (evaluate.log, Hydra's file handler), above the log records. In
    place: the handler appends to the same open file afterwards."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.flush()
            path = Path(handler.baseFilename)
            path.write_text(f"{text}\n\nlog:\n{path.read_text()}")
