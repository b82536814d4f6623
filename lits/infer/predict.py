"""Segment new CTs (no labels) from a checkpoint alone and write NIfTI label maps on each input's grid.

python predict.py ckpt=PATH input=FILE_OR_DIR output=DIR: the model, the HU window and the sigmoid temperature
come from the checkpoint's training config; post-processing from ``postprocess.*`` (same defaults as evaluate).
Everything goes to output=: the label maps (compressed .nii.gz unless naming=lits) and predictions.csv; files already
there are replaced only with overwrite=true, and a refused run creates no folder.
Every input goes through the same reader as training data (lits/data/nifti.py: validation, canonical
orientation) and its label map is written back on the input's own voxel grid (lits/export.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from lits.core.cli import check_writable_folder
from lits.core.config import PredictConfig, typed
from lits.core.device import resolve_device
from lits.core.errors import LitsError
from lits.core.files import write_csv, write_json
from lits.core.tables import format_table
from lits.data.nifti import CasePaths, load_case
from lits.data.preprocess import preprocess_image
from lits.data.resample import resize_inplane
from lits.infer.checkpoint import load_model
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
from lits.infer.postprocess import postprocess, predicted_lesions
from lits.infer.predictor import predict_volume

log = logging.getLogger(__name__)

CSV_NAME = "predictions.csv"  # beside the label maps: input, output, liver and tumour ml, lesions per CT


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
    """Why `path` is not a readable 3D NIfTI volume (one line), or None."""
    try:
        shape = nib.load(str(path)).shape
    except Exception as exc:
        return f"{path}: cannot read NIfTI ({type(exc).__name__}); pass CT volumes in NIfTI format"
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) is a 3D volume, as the reader treats it
        shape = shape[:-1]
    if len(shape) != 3:
        return (
            f"{path}: expected a 3D CT volume, got shape {tuple(shape)}; pass single 3D volumes "
            "(split 4D series, stack 2D slices into a volume)"
        )
    return None


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


def check_overwrite(out_dir: Path, names: list[str], probabilities: bool, overwrite: bool) -> None:
    """Refuse (before anything is predicted or created) to replace files in out_dir unless overwrite=true."""
    targets = [out_dir / n for n in names]
    targets += [out_dir / probability_name(n) for n in names] if probabilities else []
    targets.append(out_dir / CSV_NAME)
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more of the files this run writes)" if len(existing) > 1 else ""
        raise LitsError(
            f"{existing[0]}: already exists{more}; pass overwrite=true to replace, or choose another output=DIR"
        )


def predict(cfg) -> dict:
    """The predict task (predict.py): a composed predict config or PredictConfig in, one label map per input CT out.

    Before any inference: the inputs' headers are checked and the output folder must be writable. A CT that turns out
    unreadable or implausible while it is read stops the run (on_error=fail; the label maps written so far are
    complete files) or is skipped and listed (on_error=skip: in the log, the summary and skipped_inputs.json)."""
    cfg = typed(PredictConfig, cfg)
    inputs, skipped = check_inputs(find_inputs(cfg.input), cfg.on_error)
    for reason in skipped.values():
        log.warning("skipped %s", reason)
    out_dir = Path(cfg.output)
    names = _output_names(inputs, out_dir, cfg.naming)
    check_overwrite(out_dir, names, cfg.save_probabilities, cfg.overwrite)
    check_writable_folder(out_dir, "label maps", "choose a writable output=DIR")
    device = resolve_device(cfg.device, key="device")
    model, spec, _ = load_model(cfg.ckpt, device)
    post = spec.postprocess.with_overrides(cfg.postprocess)
    infer = dict(
        device=device,
        batch_size=cfg.batch_size,
        amp=cfg.amp,
        tta=cfg.tta,
        progress=cfg.progress,
        **spec.predictor_settings(),
    )

    rows = []
    for path, name in tqdm(list(zip(inputs, names)), desc="predicting", unit="volume", disable=not cfg.progress):
        try:
            case = load_case(CasePaths(nifti_stem(path), path, None))
        except LitsError as exc:
            if cfg.on_error != "skip":
                raise LitsError(f"{exc}; or on_error=skip to predict the other inputs") from None
            skipped[path] = str(exc)
            log.warning("skipped %s", exc)
            continue
        if case.warning:
            log.warning("%s", case.warning)
        # float16 in [0, 1], exactly what the training cache stores, so predictions match evaluate.py's
        image = preprocess_image(case.image, case.spacing, spec.preprocessing).astype(np.float16)
        native_yx = case.image.shape[1:]
        case.image = None  # free the float32 HU copy before inference
        probs = predict_volume(model, image, **infer)
        if probs.shape[2:] != native_yx:  # the cache grid was resampled in-plane: back to the CT's own grid
            probs = resize_inplane(probs, native_yx, order=1)
        image = resize_inplane(image.astype(np.float32), native_yx, order=1) if post.crf else None
        labels = postprocess(probs[0], probs[1], post, case.spacing, image)
        header = read_header(path)
        export_labels(out_dir / name, labels, case.orientation, header)
        if cfg.save_probabilities:
            export_probabilities(out_dir / probability_name(name), probs, case.orientation, header)
        voxel_ml = float(np.prod(case.spacing)) / 1000.0
        rows.append(
            {
                "input": str(path),
                "output": str(out_dir / name),
                "liver_ml": float((labels >= 1).sum()) * voxel_ml,
                "tumor_ml": float((labels == 2).sum()) * voxel_ml,
                "lesions": predicted_lesions(labels == 2)[1],
            }
        )

    if not rows:
        _report_skipped(skipped, out_dir)
        raise LitsError(f"{cfg.input}: none of the {len(skipped)} inputs could be predicted; see the reasons above")
    write_csv(out_dir / CSV_NAME, rows)
    shown = [{**r, "input": Path(r["input"]).name, "output": Path(r["output"]).name} for r in rows]
    print(format_table(shown, ["input", "output", "liver_ml", "tumor_ml", "lesions"]))
    print(f"wrote {len(rows)} label maps (0 background, 1 liver, 2 tumour) and {CSV_NAME} to {out_dir}")
    _report_skipped(skipped, out_dir)
    return {"outputs": [r["output"] for r in rows], "rows": rows, "skipped": {str(k): v for k, v in skipped.items()}}


def _report_skipped(skipped: dict[Path, str], out_dir: Path) -> None:
    """on_error=skip: what was left out, on the console and in <output>/skipped_inputs.json."""
    if not skipped:
        return
    listing = write_json(out_dir / "skipped_inputs.json", [{"input": str(p), "reason": r} for p, r in skipped.items()])
    print(f"skipped {len(skipped)} input(s), listed in {listing}:")
    for path in skipped:
        print(f"  {path.name}")
