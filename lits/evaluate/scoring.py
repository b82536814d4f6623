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
predictions/ with save_predictions=true. TensorBoard: see ``_tensorboard_dir``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from lits.core.device import resolve_device
from lits.core.errors import LitsError
from lits.core.files import write_atomic, write_bytes_atomic, write_csv, write_json
from lits.core.tables import format_table
from lits.data.nifti import to_canonical
from lits.data.prepare import prepare
from lits.data.sources import discover, natural_key
from lits.evaluate.metrics import aggregate, case_metrics
from lits.evaluate.pictures import dice_volume_png, error_slices, montage_png
from lits.infer.checkpoint import load_model, network_settings
from lits.infer.export import (
    SEGMENTATION_NAME,
    export_labels,
    export_probabilities,
    is_nifti,
    orientation_from_meta,
    output_name,
    probability_name,
    read_header,
)
from lits.infer.postprocess import PostprocessConfig, ablation_stages, postprocess
from lits.infer.predictor import TTA_FLIPS, predict_volume

log = logging.getLogger(__name__)

# per-case table printed and put in report.md (cases.csv has every metric)
CASE_COLUMNS = [
    "case",
    "liver_dice",
    "tumor_dice",
    "tumor_volume_ref_ml",
    "tumor_volume_pred_ml",
    "tumor_assd",
    "tumor_lesions_ref",
    "tumor_lesion_tp_iou50",
    "tumor_lesion_fp_iou50",
    "tumor_burden_ref",
    "tumor_burden_pred",
]
# rows of the stage table (metrics.json has every aggregate)
SUMMARY_KEYS = [
    "liver_dice_per_case",
    "liver_dice_global",
    "liver_voe_mean",
    "liver_rvd_mean",
    "liver_assd_mean",
    "liver_msd_mean",
    "liver_rmsd_mean",
    "tumor_dice_per_case",
    "tumor_dice_global",
    "tumor_voe_mean",
    "tumor_rvd_mean",
    "tumor_assd_mean",
    "tumor_msd_mean",
    "tumor_rmsd_mean",
    "tumor_assd_sentinel_cases",
    "tumor_lesion_precision_iou50",
    "tumor_lesion_recall_iou50",
    "tumor_lesion_precision_iou0",
    "tumor_lesion_recall_iou0",
    "tumor_burden_rmse",
    "tumor_burden_max_abs_error",
]
# stages whose per-case rows go to cases.csv; the others only to ablation_cases.csv
HEADLINE_STAGES = ("raw", "post", "given")


@dataclass
class Source:
    """Where predictions come from: the cases to score and, per case, (stage, labels, probabilities) in order."""

    cases: list
    stages: list[tuple[str, str]]  # (name, description), report order
    main: str  # the stage pictures, exports and the printed case table show
    predict: Callable[[object], Iterator[tuple[str, np.ndarray, np.ndarray | None]]]
    info: dict = field(default_factory=dict)  # what metrics.json records about the source
    image_paths: dict = field(default_factory=dict)  # case id -> source CT (export: header and name)
    tensorboard: tuple[Path, int] | None = None  # (log dir, step)


def run(cfg) -> dict:
    out_dir = Path(cfg.paths.output_dir)
    source = _source(cfg)
    if not source.cases:  # e.g. data.on_error=skip left every case out
        raise LitsError(
            "no cases left to evaluate (see the log and skipped_cases.json in the run dir); fix the data or choose another split"
        )
    report = cfg.report
    if cfg.save_predictions and source.main == "given":
        log.warning("save_predictions=true: nothing to save, the predictions are the files in %s", cfg.predictions)

    rows: dict[str, list[dict]] = {name: [] for name, _ in source.stages}
    for case in tqdm(source.cases, desc="evaluating", unit="case", disable=not cfg.progress):
        # scored on the native canonical grid (the reference's voxels), also when the cache was resampled
        label, spacing = np.asarray(case.native_label), case.native_spacing
        voxel_ml = float(np.prod(spacing)) / 1000.0
        for stage, pred, probs in source.predict(case):
            row = {"case": case.case_id, "stage": stage, **case_metrics(pred, label, spacing)}
            for s in ("liver", "tumor"):
                row[f"{s}_volume_ref_ml"] = row[f"{s}_ref_voxels"] * voxel_ml
                row[f"{s}_volume_pred_ml"] = row[f"{s}_pred_voxels"] * voxel_ml
            rows[stage].append(row)
            if stage == source.main:
                _case_outputs(cfg, out_dir, source, case, label, pred, probs, row)

    summary = {stage: aggregate(stage_rows) for stage, stage_rows in rows.items()}
    result = {
        **source.info,
        "num_cases": len(source.cases),
        "main_stage": source.main,
        "stages": [{"name": n, "description": d} for n, d in source.stages],
        "postprocess": OmegaConf.to_container(cfg.postprocess, resolve=True),
        **summary,
    }
    stage_table = format_table(
        [{"metric": k, **{s: summary[s].get(k) for s in summary}} for k in SUMMARY_KEYS], ["metric", *summary]
    )
    case_table = format_table(rows[source.main], CASE_COLUMNS)

    write_csv(out_dir / "cases.csv", [r for s in rows if s in HEADLINE_STAGES for r in rows[s]])
    if len(rows) > 1:
        write_csv(out_dir / "ablation_cases.csv", [r for s in rows for r in rows[s]])
    if report.plot:
        title = (
            f"{source.info.get('split') or 'predictions'}, stage {source.main}: tumour Dice per case "
            f"{summary[source.main]['tumor_dice_per_case']:.3f}"
        )
        write_bytes_atomic(out_dir / "tumor_dice_vs_volume.png", dice_volume_png(rows[source.main], title))
    write_atomic(out_dir / "report.md", _markdown(result, source, stage_table, case_table, report))
    write_json(out_dir / "metrics.json", result)
    if source.tensorboard is not None:
        _log_tensorboard(*source.tensorboard, summary, stage_table, source.info.get("split") or "predictions")

    print(f"\n{len(source.cases)} cases, stage '{source.main}':")
    print(case_table)
    print("\nstages (" + ", ".join(f"{n}: {d}" for n, d in source.stages) + "); all metrics in metrics.json:")
    print(stage_table)
    print(f"wrote cases.csv, metrics.json, report.md and pictures to {out_dir}")
    return result


def evaluate_run(ckpt: Path, out_dir: Path, split: str, postprocess, progress: bool = False) -> dict:
    """`python evaluate.py ckpt=CKPT split=SPLIT` into `out_dir`, from inside another stage (train.py's
    `evaluate_after`): evaluate.yaml composed with the caller's post-processing settings."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [f"ckpt={ckpt}", f"split={split}", f"progress={str(progress).lower()}"]
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (train.py): its config path holds evaluate.yaml
        cfg = compose("evaluate", overrides=overrides)
    else:
        with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "configs"), version_base="1.3"):
            cfg = compose("evaluate", overrides=overrides)
    OmegaConf.set_struct(cfg, False)
    cfg.paths = {"output_dir": str(out_dir)}
    cfg.postprocess = postprocess
    log.info("evaluating %s on the %s split into %s", ckpt, split, out_dir)
    return run(cfg)


# ------------------------------------------------------------------------------------------------ sources


def _source(cfg) -> Source:
    has_ckpt = not OmegaConf.is_missing(cfg, "ckpt") and cfg.ckpt is not None
    if has_ckpt and cfg.predictions:
        raise LitsError("both ckpt= and predictions= given; evaluate one: a checkpoint, or a folder of predictions")
    if cfg.predictions:
        return _predictions_source(cfg)
    if not has_ckpt:
        raise LitsError(
            "nothing to evaluate: give ckpt=PATH (a checkpoint), or predictions=DIR data=lits data.root=DIR "
            "(a folder of segmentation-N.nii files and the references)"
        )
    return _checkpoint_source(cfg)


def _checkpoint_source(cfg) -> Source:
    if cfg.get("data") is not None:
        raise LitsError(
            "data=... is for predictions=DIR; a checkpoint brings its own data config "
            "(use data_root=DIR if the data moved)"
        )
    device = resolve_device(cfg.device, key="device")
    model, train_cfg, state = load_model(cfg.ckpt, device)
    if cfg.split not in state["splits"]:
        raise LitsError(f"split={cfg.split}: not in the checkpoint's splits {sorted(state['splits'])}")
    data_cfg = train_cfg.data
    if cfg.data_root:
        data_cfg.root = cfg.data_root
        data_cfg.synthetic = None  # an explicit folder is read as is, never generated into
    _, cases = prepare(
        data_cfg,
        train_cfg.seed,
        splits=state["splits"],
        only=(cfg.split,),
        progress=cfg.progress,
        report_dir=cfg.paths.output_dir,
    )  # data.on_error=skip lists left-out cases there
    post_cfg = PostprocessConfig.from_mapping(cfg.postprocess)
    steps = ablation_stages(post_cfg) if cfg.ablation else ablation_stages(post_cfg)[:1]
    stages = [(name, description) for name, description, _ in steps]
    stages.append(("post", "configured post-processing" + (" (flip TTA)" if cfg.tta else "")))
    if cfg.tta:
        stages.append(("post_no_tta", "configured post-processing, identity view only"))
    infer = dict(device=device, batch_size=cfg.batch_size, amp=cfg.amp, **network_settings(train_cfg, state))

    def predict(case):
        # probabilities back on the native grid (identity unless data.target_spacing_xy resampled the cache)
        plain = case.to_native(predict_volume(model, case.image, flips=((),), **infer), order=1)
        probs = plain
        if cfg.tta:  # identity and flips predicted apart so post_no_tta costs no extra forward pass
            probs = case.to_native(predict_volume(model, case.image, flips=TTA_FLIPS[1:], **infer), order=1)
            probs *= (len(TTA_FLIPS) - 1) / len(TTA_FLIPS)
            probs += plain / len(TTA_FLIPS)
        for name, _, stage_cfg in steps:
            yield name, postprocess(probs[0], probs[1], stage_cfg), None
        yield "post", postprocess(probs[0], probs[1], post_cfg), probs
        if cfg.tta:
            yield "post_no_tta", postprocess(plain[0], plain[1], post_cfg), None

    tb_dir = _tensorboard_dir(cfg.tensorboard_dir, Path(cfg.ckpt).resolve().parent.parent / "tensorboard")
    paths = {p.case_id: p.image for p in discover(data_cfg)[0]} if cfg.save_predictions else {}
    info = {
        "mode": "checkpoint",
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "split": cfg.split,
        "trained_epochs": state.get("epoch", -1) + 1,
        "tta": bool(cfg.tta),
    }
    return Source(
        cases[cfg.split], stages, "post", predict, info, paths, (tb_dir, state.get("epoch", 0)) if tb_dir else None
    )


def _predictions_source(cfg) -> Source:
    data_cfg = cfg.get("data")
    if data_cfg is None:
        raise LitsError(
            f"predictions={cfg.predictions} needs the references: add data=lits data.root=DIR "
            "(the folder with volume-N / segmentation-N)"
        )
    files = _prediction_files(Path(cfg.predictions))
    found, problems = discover(data_cfg)  # any data.layout: lits, msd, csv
    refs = {p.case_id: p for p in found}
    for problem in problems:  # a broken reference matters only if it was predicted
        if problem.case_id in files:
            raise LitsError(problem.reason)
    missing = [str(f) for cid, f in files.items() if cid not in refs]
    if missing:
        raise LitsError(
            f"{missing[0]}: no reference case with that number under {data_cfg.root}; "
            "remove the file or point data.root at the matching references"
        )
    for cid, path in files.items():  # headers only: fail before any case is scored
        _check_grid(path, refs[cid].image)
    unscored = sorted(set(refs) - set(files), key=natural_key)
    if unscored:
        log.warning("%d reference cases have no prediction and are not scored: %s", len(unscored), unscored[:10])
    ids = sorted(files, key=natural_key)
    _, cases = prepare(
        data_cfg,
        0,
        splits={"train": [], "val": [], "test": ids},
        only=("test",),
        progress=cfg.progress,
        report_dir=cfg.paths.output_dir,
    )

    def predict(case):
        source_affine = np.asarray(case.meta["orientation"]["source_affine"])
        labels, _ = to_canonical(_read_labels(files[case.case_id]), source_affine)
        yield "given", labels, None

    info = {
        "mode": "predictions",
        "predictions": str(Path(cfg.predictions).resolve()),
        "references": str(Path(data_cfg.root).resolve()),
        "split": None,
        "unscored_references": unscored,
    }
    tb_dir = _tensorboard_dir(cfg.tensorboard_dir, None)
    return Source(
        cases["test"], [("given", "predictions as given")], "given", predict, info, {}, (tb_dir, 0) if tb_dir else None
    )


def _prediction_files(folder: Path) -> dict[str, Path]:
    """case id -> prediction file: segmentation-N.nii[.gz] or test-segmentation-N.nii[.gz] directly in `folder`."""
    if not folder.is_dir():
        raise LitsError(
            f"{folder}: predictions folder not found; set predictions=DIR to a folder of segmentation-N.nii files"
        )
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        match = SEGMENTATION_NAME.match(path.name)
        if not match:
            continue
        cid = str(int(match.group(1)))  # case ids as the data readers make them: segmentation-007 is case "7"
        if cid in files:
            raise LitsError(
                f"{path}: case {cid} also predicted by {files[cid].name}; keep one file per case in {folder}"
            )
        files[cid] = path
    if not files:
        found = sum(1 for p in folder.iterdir() if is_nifti(p))
        raise LitsError(
            f"{folder}: no segmentation-N.nii[.gz] or test-segmentation-N.nii[.gz] files ({found} other NIfTI files); "
            "name predictions like the LiTS submission"
        )
    return files


def _shape3(img) -> tuple[int, ...]:
    shape = tuple(img.shape)
    while len(shape) > 3 and shape[-1] == 1:  # as the reader: trailing singleton axes are dropped
        shape = shape[:-1]
    return shape


def _check_grid(pred_path: Path, ref_image: Path, atol: float = 1e-3) -> None:
    """One-line LitsError unless the prediction has the reference volume's shape and affine."""
    try:
        pred, ref = nib.load(str(pred_path)), nib.load(str(ref_image))
    except Exception as exc:
        raise LitsError(
            f"{pred_path}: cannot read NIfTI header ({type(exc).__name__}); re-export the prediction"
        ) from None
    if _shape3(pred) != _shape3(ref):
        raise LitsError(
            f"{pred_path}: shape {_shape3(pred)} differs from the reference {ref_image.name} {_shape3(ref)}; "
            "write predictions on the reference volume's voxel grid"
        )
    if not np.allclose(pred.affine, ref.affine, atol=atol, rtol=0):
        raise LitsError(
            f"{pred_path}: affine differs from the reference {ref_image.name} by more than {atol}; "
            "write predictions with the reference volume's affine (no reorientation or resampling)"
        )


def _read_labels(path: Path) -> np.ndarray:
    """A prediction file's voxels as uint8 {0, 1, 2} in source order, or a one-line LitsError."""
    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as exc:
        raise LitsError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc}); re-export the prediction") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise LitsError(
            f"{path}: non-integer voxel values; predictions are label maps (0 background, 1 liver, 2 tumour)"
        )
    if data.dtype.kind not in "iufb" or data.min() < 0 or data.max() > 2:
        raise LitsError(
            f"{path}: values outside {{0, 1, 2}}; predictions are label maps (0 background, 1 liver, 2 tumour)"
        )
    return data.astype(np.uint8)


# ------------------------------------------------------------------------------------------------ outputs


def _case_outputs(cfg, out_dir: Path, source: Source, case, label, pred, probs, row) -> None:
    """Montage of the main stage and, with save_predictions, the exported NIfTI files."""
    report = cfg.report
    if report.montages:
        slices = error_slices(pred, label, report.montage_slices)
        title = f"case {case.case_id} ({source.main}): liver Dice {row['liver_dice']:.3f}, tumour Dice {row['tumor_dice']:.3f}"
        images = case.to_native(np.asarray(case.image[slices], dtype=np.float32), order=1)
        png = montage_png(images, label[slices], pred[slices], slices, title, report.crop_margin)
        write_bytes_atomic(out_dir / "montages" / f"case-{case.case_id}.png", png)
    if cfg.save_predictions and source.main != "given":
        image_path = source.image_paths.get(case.case_id)
        header = read_header(image_path)
        # lits naming from the case id (the number in the file name, whatever the data layout)
        name = (
            f"test-segmentation-{case.case_id}.nii"
            if cfg.naming == "lits" or image_path is None
            else output_name(image_path, cfg.naming)
        )
        orientation = orientation_from_meta(case.meta["orientation"])
        export_labels(out_dir / "predictions" / name, pred, orientation, header)
        if cfg.save_probabilities and probs is not None:
            export_probabilities(out_dir / "predictions" / probability_name(name), probs, orientation, header)


def _tensorboard_dir(setting, default: Path | None) -> Path | None:
    """tensorboard_dir: null = off; auto = the checkpoint's training run's tensorboard/ folder when it exists
    (eval numbers land beside the training curves, at the checkpoint's epoch); a path = there."""
    if setting is None or setting is False:
        return None
    if setting == "auto":
        return default if default is not None and default.is_dir() else None
    return Path(setting)


def _log_tensorboard(log_dir: Path, step: int, summary: dict, stage_table: str, split: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir)) as writer:
        for stage, values in summary.items():
            for key in SUMMARY_KEYS:
                value = values.get(key)
                if value is not None and math.isfinite(value):
                    writer.add_scalar(f"eval_{split}/{stage}/{key}", value, step)
        writer.add_text(f"eval_{split}/stages", stage_table, step)
    log.info("evaluation metrics logged to TensorBoard in %s (step %d)", log_dir, step)


def _markdown(result: dict, source: Source, stage_table: str, case_table: str, report) -> str:
    what = (
        f"checkpoint `{result['ckpt']}`, split `{result['split']}`, {result['trained_epochs']} trained epochs"
        + (", flip TTA" if result.get("tta") else "")
        if result["mode"] == "checkpoint"
        else f"predictions `{result['predictions']}` against references `{result['references']}`"
    )
    lines = [
        "# LiTS evaluation",
        "",
        f"{what}; {result['num_cases']} cases.",
        "",
        "Metrics follow the official LiTS scorer (lits/metrics.py): Dice per case (mean) and global; "
        "surface distances in mm, averaged over cases where both masks are non-empty "
        "(`*_sentinel_cases` counts the others); lesion detection at IoU > 0.5 and > 0.",
        "",
        "## Stages",
        "",
    ]
    lines += [f"- `{name}`: {description}" for name, description in source.stages]
    if result["mode"] == "checkpoint":
        post = ", ".join(f"{k}={v}" for k, v in result["postprocess"].items())
        lines += [
            "",
            f"Cumulative ablation: each stage adds one step to the one before. `post` = `postprocess.*`: {post}.",
        ]
    lines += [
        "",
        "## Aggregates per stage",
        "",
        stage_table,
        "",
        f"## Cases (stage `{source.main}`)",
        "",
        case_table,
        "",
        "Every metric per case: `cases.csv`"
        + (" and `ablation_cases.csv` (all stages)" if len(source.stages) > 1 else "")
        + "; all aggregates: `metrics.json`.",
        "",
    ]
    if report.plot:
        lines += ["## Tumour Dice against tumour volume", "", "![tumour Dice vs volume](tumor_dice_vs_volume.png)", ""]
    if report.montages:
        lines += [
            "## Slices with the largest tumour error",
            "",
            "Rows: slices; columns: CT, reference outlines, prediction outlines (liver green, tumour red; "
            "radiological view: patient's right on the left).",
            "",
        ]
        lines += [f"![case {c.case_id}](montages/case-{c.case_id}.png)" for c in source.cases]
        lines.append("")
    return "\n".join(lines)
