"""Segment new CTs (no labels) from a checkpoint or an exported model folder and write NIfTI label maps on each
input's grid.

python predict.py ckpt=PATH input=FILE_OR_DIR output=DIR: the network and its inference spec (HU window, sigmoid
temperature, calibration, post-processing, TTA flips) come from the checkpoint; ``postprocess.*`` replaces settings.
python predict.py model=DIR ...: the same from a folder written by export.py, the network run by onnxruntime. That
path imports no torch (tests/infer/test_onnx.py checks it with python -X importtime): the torch modules are imported in
`_open_network` only for ckpt=.
Everything goes to output=: the label maps (compressed .nii.gz unless naming=lits) and predictions.csv; files already
there are replaced only with overwrite=true, and a refused run creates no folder.
Every input goes through the same reader as training data (lits/data/nifti.py: validation, canonical
orientation) and its label map is written back on the input's own voxel grid (lits/infer/export.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from lits.core.cli import check_writable_folder
from lits.core.config import PredictConfig, typed
from lits.core.errors import LitsError
from lits.core.files import write_csv, write_json
from lits.core.tables import count, format_table
from lits.data.nifti import CasePaths, header_problem, open_pair
from lits.data.preprocess import preprocess_pair
from lits.data.resample import resize_inplane
from lits.infer.batches import predict_masks, predict_volume
from lits.infer.export import (
    SEGMENTATION_NAME,
    export_labels,
    export_probabilities,
    is_nifti,
    nifti_stem,
    output_name,
    probability_name,
    read_header,
)
from lits.infer.onnx_network import SPEC_FILE, open_model_folder, read_model_folder
from lits.infer.postprocess import count_lesions, needs_probabilities, postprocess, postprocess_masks
from lits.infer.predict_outputs import (
    CSV_COLUMNS,
    CSV_NAME,
    RUN_RECORD,
    check_overwrite,
    csv_row,
    finished_rows,
    run_record,
)
from lits.infer.spec import warn_about_tta

log = logging.getLogger(__name__)


def find_inputs(input_path: str | Path) -> list[Path]:
    """The CT files to segment: one NIfTI file, or every NIfTI file directly in a folder except LiTS label files."""
    path = Path(input_path)
    if not path.exists():
        raise LitsError(f"{path}: input not found; pass input=FILE.nii[.gz] or input=DIR with CT volumes")
    if path.is_file():
        if not is_nifti(path):
            raise LitsError(
                f"{path}: not a NIfTI file (.nii / .nii.gz); convert the CT to NIfTI first (e.g. dcm2niix for DICOM)"
            )
        return [path]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if not entries:
        raise LitsError(f"{path}: empty folder; pass input=DIR with CT volumes (.nii / .nii.gz)")
    files = [p for p in entries if p.is_file() and is_nifti(p)]
    skipped = [p.name for p in files if SEGMENTATION_NAME.match(p.name)]
    if skipped:
        log.info("skipping %d LiTS label files in %s (%s ...)", len(skipped), path, skipped[0])
    files = [p for p in files if not SEGMENTATION_NAME.match(p.name)]
    if not files:
        raise LitsError(
            f"{path}: no CT volumes (.nii / .nii.gz) among its {len(entries)} entries; pass a folder of NIfTI CTs"
        )
    return files


def _header_problem(path: Path) -> str | None:
    """Why `path` is not a readable 3D NIfTI volume of a plausible size (one line), or None."""
    try:
        header = nib.load(str(path)).header
    except Exception as exc:
        return f"{path}: cannot read NIfTI ({type(exc).__name__}); pass CT volumes in NIfTI format"
    return header_problem(path, header)


def check_inputs(files: list[Path], on_error: str = "fail") -> tuple[list[Path], dict[Path, str]]:
    """Headers only, before anything is predicted: every input must be a readable 3D NIfTI volume.

    on_error="fail": the first bad one raises its LitsError; "skip": (the good inputs, {bad input: reason})."""
    good, skipped = [], {}
    for path in files:
        problem = _header_problem(path)
        if problem is None:
            good.append(path)
        elif on_error == "skip":
            skipped[path] = problem
        else:
            raise LitsError(f"{problem}; or on_error=skip to predict the other inputs")
    if not good:
        raise LitsError(f"{files[0].parent}: none of the {len(files)} inputs is a readable CT volume; see above")
    return good, skipped


def _output_names(inputs: list[Path], out_dir: Path, naming: str) -> list[str]:
    """The label-map name of every input; two inputs on one name, or a name on its input, are refused."""
    names = [output_name(p, naming) for p in inputs]
    seen: dict[str, Path] = {}
    for path, name in zip(inputs, names):
        if name in seen:
            raise LitsError(
                f"{path}: its output {name} would overwrite the one of {seen[name].name}; "
                "use naming=input or separate folders"
            )
        seen[name] = path
        if (out_dir / name).resolve() == path.resolve():
            raise LitsError(f"{path}: the label map would overwrite this CT; choose another output=DIR")
    return names


def predict(cfg) -> dict:
    """The predict task (predict.py): a composed predict config or PredictConfig in, one label map per input CT out.

    Before any inference: the inputs' headers are checked and the output folder must be writable. A CT that turns out
    unreadable or implausible while it is read stops the run (on_error=fail; the label maps written so far are
    complete files) or is skipped and listed (on_error=skip: in the log, the summary and skipped_inputs.json). A rerun
    with the same model and settings continues: the CTs an earlier run finished are not predicted again."""
    cfg = typed(PredictConfig, cfg)
    inputs, skipped = check_inputs(find_inputs(cfg.input), cfg.on_error)
    for reason in skipped.values():
        log.warning("skipped %s", reason)
    out_dir = Path(cfg.output)
    names = _output_names(inputs, out_dir, cfg.naming)
    record = run_record(cfg, _model_file(cfg))
    finished = None if cfg.overwrite else finished_rows(out_dir, record, cfg.save_probabilities)
    check_overwrite(out_dir, names, cfg.save_probabilities, cfg.overwrite, same_run=finished is not None)
    check_writable_folder(out_dir, "label maps", "choose a writable output=DIR")
    finished = finished or {}
    if finished:
        log.info("continuing in %s: %d of %d CTs already predicted with this model and these settings", out_dir,
                 sum(n in finished for n in names), len(names))  # fmt: skip
    network, spec, tuned_tta = _open_network(cfg)
    tta = warn_about_tta(spec, cfg.tta, tuned_tta, cfg.ckpt if cfg.model_dir is None else cfg.model_dir)
    post = spec.postprocess.with_overrides(cfg.postprocess)
    infer = dict(batch_size=cfg.batch_size, flips=spec.views(tta), progress=cfg.progress, **spec.predictor_settings())

    rows = {name: finished[name] for name in names if name in finished}
    todo = [(path, name) for path, name in zip(inputs, names) if name not in finished]
    recorded = False
    for path, name in tqdm(todo, desc="predicting", unit="volume", disable=not cfg.progress):
        read = _read(path, spec, cfg.on_error, skipped)
        if read is None:
            continue
        rows[name] = _predict_one(network, read, post, infer, cfg.save_probabilities, path, out_dir / name)
        if not recorded:  # with this run's first label map (a failed write leaves the folder as it was): what made it
            recorded = bool(write_json(out_dir / RUN_RECORD, record))
        write_csv(out_dir / CSV_NAME, [rows[n] for n in names if n in rows])  # what is finished, after each CT

    if not rows:
        _report_skipped(skipped, out_dir)
        raise LitsError(f"{cfg.input}: none of the {len(skipped)} inputs could be predicted; see the reasons above")
    ordered = [rows[n] for n in names if n in rows]  # the inputs' order, earlier runs' rows among them
    shown = [{**r, "input": Path(r["input"]).name, "output": Path(r["output"]).name} for r in ordered]
    print(format_table(shown, list(CSV_COLUMNS)))
    earlier = f" ({len(finished)} of them by an earlier run of the same model and settings)" if finished else ""
    print(f"wrote {count(len(rows), 'label map')}{earlier} (0 background, 1 liver, 2 tumour) and {CSV_NAME} to "
          f"{out_dir}")  # fmt: skip
    _report_skipped(skipped, out_dir)
    return {"outputs": [r["output"] for r in ordered], "rows": ordered,
            "skipped": {str(k): v for k, v in skipped.items()}}  # fmt: skip


def _predict_one(network, read, post, infer: dict, save_probabilities: bool, path: Path, target: Path) -> dict:
    """Segment one read CT, write its label map (and probabilities) to `target`: its predictions.csv row."""
    image, native_yx, orientation, spacing = read
    labels, probabilities = _segment(network, image, native_yx, spacing, post, infer, save_probabilities)
    del image
    header = read_header(path)
    export_labels(target, labels, orientation, header)
    if save_probabilities:
        export_probabilities(target.with_name(probability_name(target.name)), probabilities, orientation, header)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    tumor = labels == 2
    return csv_row(path, target, np.count_nonzero(labels) * voxel_ml, np.count_nonzero(tumor) * voxel_ml,
                   count_lesions(tumor))  # fmt: skip


def _model_file(cfg: PredictConfig) -> Path:
    """The file that identifies the model: the checkpoint, or the model folder's inference.json (it holds model.onnx's
    sha256). Refuses in one line when there is none."""
    if cfg.model_dir is not None:
        spec_file = Path(cfg.model_dir) / SPEC_FILE
        if not spec_file.is_file():
            read_model_folder(cfg.model_dir)  # raises its one-line refusal
        return spec_file
    from lits.infer.checkpoint import checkpoint_file  # torch: only for ckpt=

    return checkpoint_file(cfg.ckpt)


def _open_network(cfg: PredictConfig):
    """(network as a lits.infer.batches.SliceNetwork, inference spec, whether its post-processing was tuned on flip
    TTA or None) of model= (onnxruntime) or ckpt= (torch, imported here so that model= never imports it)."""
    if cfg.model_dir is not None:
        return open_model_folder(cfg.model_dir, cfg.device, cfg.amp)
    from lits.core.device import resolve_device
    from lits.infer.checkpoint import load_model, tuned_tta
    from lits.infer.predictor import TorchNetwork

    device = resolve_device(cfg.device, key="device")
    model, spec, state = load_model(cfg.ckpt, device)
    return TorchNetwork(model, device, cfg.amp), spec, tuned_tta(state)


def _read(path: Path, spec, on_error: str, skipped: dict[Path, str]):
    """(image float16 in [0, 1] as the training cache holds it, native (Y, X), orientation, spacing) of one CT, or
    None when it turns out unreadable or implausible while read and on_error=skip (then listed in `skipped`)."""
    try:
        pair = open_pair(CasePaths(nifti_stem(path), path, None))
        image = preprocess_pair(pair, spec.preprocessing)  # reads every slab: the intensity checks run here
    except LitsError as exc:
        if on_error != "skip":
            raise LitsError(f"{exc}; or on_error=skip to predict the other inputs") from None
        skipped[path] = str(exc)
        log.warning("skipped %s", exc)
        return None
    if pair.warning:
        log.warning("%s", pair.warning)
    return image, pair.shape[1:], pair.orientation, pair.spacing  # the stored voxels go with `pair`


def _segment(network, image, native_yx, spacing, post, infer: dict, save_probabilities: bool):
    """(label map on the CT's own grid, its probabilities or None). Thresholded batch by batch into masks (back on
    the native grid when the cache grid was resampled in-plane); whole probability volumes only where needed."""
    if post.crf:  # the CRF refines whole probability volumes along the image
        probs = predict_volume(network, image, **infer)
        unit = image.astype(np.float32)
        if probs.shape[2:] != tuple(native_yx):
            probs, unit = resize_inplane(probs, native_yx, order=1), resize_inplane(unit, native_yx, order=1)
        return postprocess(probs[0], probs[1], post, spacing, unit), probs
    keep = dict(tumor_probability=needs_probabilities(post), probabilities=save_probabilities)
    masks = predict_masks(network, image, threshold=post.threshold, tumor_threshold=post.tumor_cut, out_yx=native_yx,
                          **keep, **infer)  # fmt: skip
    labels = postprocess_masks(masks.liver, masks.tumor, post, masks.tumor_probability, spacing)
    return labels, masks.probabilities


def _report_skipped(skipped: dict[Path, str], out_dir: Path) -> None:
    """on_error=skip: what was left out, on the console and in <output>/skipped_inputs.json."""
    if not skipped:
        return
    listing = write_json(out_dir / "skipped_inputs.json", [{"input": str(p), "reason": r} for p, r in skipped.items()])
    print(f"skipped {len(skipped)} input(s), listed in {listing}:")
    for path in skipped:
        print(f"  {path.name}")
