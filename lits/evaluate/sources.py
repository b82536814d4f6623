"""Where the predictions evaluate.py scores come from: a checkpoint run on its split, or a folder of files."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from omegaconf import MISSING

from lits.core.config import EvaluateConfig, PostprocessConfig
from lits.core.device import resolve_device
from lits.core.errors import LitsError
from lits.data.nifti import to_canonical
from lits.data.prepare import prepare
from lits.data.sources import discover, natural_key
from lits.evaluate.curves import read_history
from lits.evaluate.report import tensorboard_dir
from lits.infer.batches import add_identity_view
from lits.infer.checkpoint import checkpoint_epoch, load_model, tuned_tta
from lits.infer.export import SEGMENTATION_NAME, is_nifti
from lits.infer.postprocess import pipeline_stages, postprocess
from lits.infer.predictor import predict_volume
from lits.infer.spec import data_from_checkpoint, warn_about_tta

log = logging.getLogger(__name__)

Prediction = Iterator[tuple[str, np.ndarray, np.ndarray | None]]  # (stage, labels, probabilities or None)


@dataclass
class Source:
    """Where predictions come from: the cases to score and, per case, (stage, labels, probabilities) in order."""

    cases: list
    stages: list[tuple[str, str]]  # (name, description), report order
    main: str  # the stage pictures, exports and the printed case table show
    predict: Callable[[object], Prediction]
    info: dict = field(default_factory=dict)  # what metrics.json records about the source
    image_paths: dict = field(default_factory=dict)  # case id -> source CT (export: header and name)
    tensorboard: tuple[Path, int] | None = None  # (log dir, step)
    postprocess: PostprocessConfig | None = None  # the configured post-processing (checkpoint mode)
    training: TrainingRecord | None = None  # the checkpoint's training run, when its folder is still there
    window: tuple[float, float] | None = None  # the HU window the cached images show (pictures say so)


@dataclass
class TrainingRecord:
    """What evaluate's reports show of the run a checkpoint comes from (epochs numbered from 1)."""

    run_dir: Path
    history: list[dict]  # history.jsonl records
    epoch: int  # the checkpoint's epoch
    best: dict | None  # {metric, value, epoch} of the run's best.pt when the checkpoint records it


def training_record(ckpt: str, state: dict) -> TrainingRecord | None:
    """The checkpoint's run folder (<run>/checkpoints/<name>.pt) with its history.jsonl, or None when it is gone."""
    run_dir = Path(ckpt).resolve().parent.parent
    history = read_history(run_dir / "history.jsonl")
    if not history:
        return None
    best = state.get("best") if "format" in state else None  # older checkpoints counted epochs from 0
    if "format" not in state:  # ... and so did their history.jsonl
        history = [{**r, "epoch": r["epoch"] + 1} for r in history]
    return TrainingRecord(run_dir, history, checkpoint_epoch(state), best)


def open_source(cfg: EvaluateConfig) -> Source:
    """The checkpoint (ckpt=) or the predictions folder (predictions=) the config names; exactly one of them."""
    if cfg.ckpt is not None and cfg.predictions:
        raise LitsError("both ckpt= and predictions= given; evaluate one: a checkpoint, or a folder of predictions")
    if cfg.predictions:
        return _predictions_source(cfg)
    if cfg.ckpt is None:
        raise LitsError(
            "nothing to evaluate: give ckpt=PATH (a checkpoint), or predictions=DIR data=lits data.root=DIR "
            "(a folder of segmentation-N.nii files and the references)"
        )
    return _checkpoint_source(cfg)


def _stages(post: PostprocessConfig, ablation: bool, tta: bool) -> tuple[list, list, list[tuple[str, str]]]:
    """(applied steps before post, candidate steps after it, every stage's (name, description) in report order) of
    checkpoint mode: the pipeline as applied with post last (its last step is post itself), then the candidates."""
    applied, candidates = pipeline_stages(post)
    before = applied[:-1] if ablation and len(applied) > 1 else applied[:1]
    after = candidates if ablation else []
    stages = [(name, description) for name, description, _ in before]
    applied_names = " -> ".join(name for name, _, _ in applied[1:]) or "threshold only"
    stages.append(("post", f"configured post-processing ({applied_names})" + (", flip TTA" if tta else "")))
    if tta:
        stages.append(("post_no_tta", "configured post-processing, identity view only"))
    stages += [(name, description) for name, description, _ in after]
    return before, after, stages


def _checkpoint_predictor(model: torch.nn.Module, infer: dict, steps: tuple[list, list], post: PostprocessConfig,
                          views: tuple):  # fmt: skip
    """`steps`: (applied stages before post, candidates after it); `views`: the identity, then the trained flips that
    test-time augmentation averages (none: no TTA)."""
    before, candidates = steps
    tta = len(views) > 1

    def predict(case) -> Prediction:
        # probabilities back on the native grid (identity unless data.target_spacing_xy resampled the cache)
        plain = case.to_native(predict_volume(model, case.image, flips=((),), **infer), order=1)
        probs = plain
        if tta:  # identity and flips predicted apart so post_no_tta costs no extra forward pass
            flipped = case.to_native(predict_volume(model, case.image, flips=views[1:], **infer), order=1)
            probs = add_identity_view(flipped, plain, len(views) - 1)
        spacing = case.native_spacing
        crf = post.crf or any(c.crf for *_, c in before)
        image = case.to_native(np.asarray(case.image, np.float32), order=1) if crf else None
        for name, _, stage_cfg in before:
            yield name, postprocess(probs[0], probs[1], stage_cfg, spacing, image), None
        yield "post", postprocess(probs[0], probs[1], post, spacing, image), probs
        if tta:
            yield "post_no_tta", postprocess(plain[0], plain[1], post, spacing, image), None
        for name, _, stage_cfg in candidates:
            yield name, postprocess(probs[0], probs[1], stage_cfg, spacing, image), None

    return predict


def _checkpoint_source(cfg: EvaluateConfig) -> Source:
    if cfg.data is not None:
        raise LitsError(
            "data=... is for predictions=DIR; a checkpoint brings its own data config "
            "(use data_root=DIR if the data moved)"
        )
    device = resolve_device(cfg.device, key="device")
    model, spec, state = load_model(cfg.ckpt, device)
    tta = warn_about_tta(spec, cfg.tta, tuned_tta(state), cfg.ckpt)
    if cfg.split not in state["splits"]:
        raise LitsError(f"split={cfg.split}: not in the checkpoint's splits {sorted(state['splits'])}")
    data = data_from_checkpoint(state, cfg.ckpt)
    if cfg.data_root:  # an explicit folder is read as is, never generated into
        data = dataclasses.replace(data, root=cfg.data_root, synthetic=None)
    _, cases = prepare(
        data, 0, splits=state["splits"], only=(cfg.split,), progress=cfg.progress, report_dir=cfg.paths.output_dir
    )  # (data.on_error=skip lists left-out cases there)
    post = spec.postprocess.with_overrides(cfg.postprocess)
    before, after, stages = _stages(post, cfg.ablation, tta)
    infer = dict(device=device, batch_size=cfg.batch_size, amp=cfg.amp, **spec.predictor_settings())
    tb_dir = tensorboard_dir(cfg.tensorboard_dir, Path(cfg.ckpt).resolve().parent.parent / "tensorboard", cfg.split)
    paths = {p.case_id: p.image for p in discover(data)[0]} if cfg.save_predictions else {}
    epoch = checkpoint_epoch(state)
    info = {
        "mode": "checkpoint",
        "ckpt": str(Path(cfg.ckpt).resolve()),
        "split": cfg.split,
        "trained_epochs": epoch,  # the checkpoint's epoch, numbered from 1
        "tta": tta,  # averaged views: tta=true and a network trained with mirroring
        "tta_flips": [list(f) for f in spec.views(tta)[1:]],
    }
    predict = _checkpoint_predictor(model, infer, (before, after), post, spec.views(tta))
    source = Source(cases[cfg.split], stages, "post", predict, info, paths, (tb_dir, epoch) if tb_dir else None, post)
    source.training, source.window = training_record(cfg.ckpt, state), spec.window
    return source


def _predictions_source(cfg: EvaluateConfig) -> Source:
    data = cfg.data
    if data is None:
        raise LitsError(
            f"predictions={cfg.predictions} needs the references: add data=lits data.root=DIR "
            "(the folder with volume-N / segmentation-N)"
        )
    if data.root == MISSING:
        raise LitsError("data.root is required; set it on the command line, e.g. data.root=...")
    files = _prediction_files(Path(cfg.predictions))
    found, problems = discover(data)  # any data.layout: lits, msd, csv
    refs = {p.case_id: p for p in found}
    for problem in problems:  # a broken reference matters only if it was predicted
        if problem.case_id in files:
            raise LitsError(problem.reason)
    missing = [str(f) for cid, f in files.items() if cid not in refs]
    if missing:
        raise LitsError(
            f"{missing[0]}: no reference case with that number under {data.root}; "
            "remove the file or point data.root at the matching references"
        )
    for cid, path in files.items():  # headers only: fail before any case is scored
        _check_grid(path, refs[cid].image)
    missing = sorted(set(refs) - set(files), key=natural_key)
    empty = cfg.missing_predictions == "empty"
    if missing:
        what = "scored as empty predictions" if empty else "not scored (missing_predictions=skip)"
        log.warning("%d of %d reference cases have no prediction file, %s: %s", len(missing), len(refs), what,
                    ", ".join(missing[:20]))  # fmt: skip
    ids = sorted(refs if empty else files, key=natural_key)
    _, cases = prepare(
        data,
        0,
        splits={"train": [], "val": [], "test": ids},
        only=("test",),
        progress=cfg.progress,
        report_dir=cfg.paths.output_dir,
    )

    def predict(case) -> Prediction:
        if case.case_id not in files:  # missing_predictions=empty
            yield "given", np.zeros(np.shape(case.native_label), np.uint8), None
            return
        source_affine = np.asarray(case.meta["orientation"]["source_affine"])
        labels, _ = to_canonical(_read_labels(files[case.case_id]), source_affine)
        yield "given", labels, None

    info = {
        "mode": "predictions",
        "predictions": str(Path(cfg.predictions).resolve()),
        "references": str(Path(data.root).resolve()),
        "split": None,
        "missing_predictions": {"cases": missing, "of": len(refs), "rule": cfg.missing_predictions},
    }
    tb_dir = tensorboard_dir(cfg.tensorboard_dir, None, "predictions")
    stages = [("given", "predictions as given")]
    source = Source(cases["test"], stages, "given", predict, info, {}, (tb_dir, 0) if tb_dir else None)
    source.window = tuple(data.window)
    return source


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
