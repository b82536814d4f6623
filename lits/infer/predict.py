"""Segment new CTs (no labels) from a checkpoint alone and write NIfTI label maps on each input's grid.

python predict.py ckpt=PATH input=FILE_OR_DIR output=DIR: the model, the HU window and the sigmoid temperature
come from the checkpoint's training config; post-processing from ``postprocess.*`` (same defaults as evaluate).
Every input goes through the same reader as training data (lits/data/nifti.py: validation, canonical
orientation) and its label map is written back on the input's own voxel grid (lits/export.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from lits.core.config import PredictConfig, typed
from lits.core.device import resolve_device
from lits.core.errors import LitsError
from lits.core.files import write_csv
from lits.core.tables import format_table
from lits.data.nifti import CasePaths, open_pair
from lits.data.preprocess import preprocess_pair
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
from lits.infer.postprocess import count_lesions, postprocess_masks
from lits.infer.predictor import predict_masks

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


def check_inputs(files: list[Path]) -> None:
    """Headers only, before anything is predicted: every input must be a readable 3D NIfTI volume."""
    for path in files:
        try:
            shape = nib.load(str(path)).shape
        except Exception as exc:
            raise LitsError(
                f"{path}: cannot read NIfTI ({type(exc).__name__}); pass CT volumes in NIfTI format"
            ) from None
        while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) is a 3D volume, as the reader treats it
            shape = shape[:-1]
        if len(shape) != 3:
            raise LitsError(
                f"{path}: expected a 3D CT volume, got shape {tuple(shape)}; pass single 3D volumes "
                "(split 4D series, stack 2D slices into a volume)"
            )


def _output_names(inputs: list[Path], out_dir: Path, naming: str) -> list[str]:
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
    """The predict task (predict.py): a composed predict config or PredictConfig in, one label map per input CT out."""
    cfg = typed(PredictConfig, cfg)
    inputs = find_inputs(cfg.input)
    check_inputs(inputs)
    out_dir = Path(cfg.output)
    names = _output_names(inputs, out_dir, cfg.naming)
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
        pair = open_pair(CasePaths(nifti_stem(path), path, None))
        # float16 in [0, 1], exactly what the training cache stores, so predictions match evaluate.py's
        image = preprocess_pair(pair, spec.preprocessing)
        native_yx, orientation, spacing = pair.shape[1:], pair.orientation, pair.spacing
        del pair  # the stored voxels (in memory for .nii.gz) are no longer needed
        # thresholded masks back on the CT's own grid (when the cache grid was resampled in-plane), batch by batch
        keep = dict(tumor_probability=post.hysteresis, probabilities=cfg.save_probabilities)
        masks = predict_masks(model, image, threshold=post.threshold, out_yx=native_yx, **keep, **infer)
        del image
        labels = postprocess_masks(masks.liver, masks.tumor, post, masks.tumor_probability)
        header = read_header(path)
        export_labels(out_dir / name, labels, orientation, header)
        if cfg.save_probabilities:
            export_probabilities(out_dir / probability_name(name), masks.probabilities, orientation, header)
        voxel_ml = float(np.prod(spacing)) / 1000.0
        tumor = labels == 2
        rows.append(
            {
                "input": str(path),
                "output": str(out_dir / name),
                "liver_ml": float(np.count_nonzero(labels)) * voxel_ml,
                "tumor_ml": float(np.count_nonzero(tumor)) * voxel_ml,
                "lesions": count_lesions(tumor),
            }
        )

    write_csv(Path(cfg.paths.output_dir) / "predictions.csv", rows)
    shown = [{**r, "input": Path(r["input"]).name, "output": Path(r["output"]).name} for r in rows]
    print(format_table(shown, ["input", "output", "liver_ml", "tumor_ml", "lesions"]))
    print(f"wrote {len(rows)} label maps (0 background, 1 liver, 2 tumour) to {out_dir}")
    return {"outputs": [r["output"] for r in rows], "rows": rows}
