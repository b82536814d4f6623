"""Predictions back to NIfTI, on exactly the input volume's voxel grid.

Everything inside lits works on canonical (Z, Y, X) RAS+ arrays (lits/data/nifti.py). A prediction file must
overlay the CT it came from in any viewer, so export undoes that reorientation (`Orientation.to_source`)
and writes the input's own affine and header (qform/sform and their codes, units), with the label map's
dtype (uint8) and no intensity scaling. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np

from lits.core.errors import LitsError
from lits.core.files import atomic_path
from lits.data.nifti import Orientation

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NAMINGS = ("auto", "lits", "input")
# A case number in an input name: LiTS `volume-N` / `test-volume-N`, MSD `liver_N`.
_CASE_NUMBER = re.compile(r"^(?:test-)?(?:volume-|liver_)(\d+)\.nii(?:\.gz)?$")
# LiTS label-file names, skipped when a folder of CTs is predicted and scored as predictions by evaluate.py.
SEGMENTATION_NAME = re.compile(r"^(?:test-)?segmentation-(\d+)\.nii(?:\.gz)?$")


def is_nifti(path: str | Path) -> bool:
    return Path(path).name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """File name without .nii / .nii.gz."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def case_number(path: str | Path) -> str | None:
    """'7' for volume-7.nii, test-volume-7.nii.gz or liver_7.nii.gz; None for other names."""
    match = _CASE_NUMBER.match(Path(path).name)
    return match.group(1) if match else None


def output_name(input_path: str | Path, naming: str = "auto") -> str:
    """Label-map file name for an input CT.

    lits: exactly the LiTS submission name `test-segmentation-N.nii` (uncompressed, N from the input name);
    input: the input's name, compressed (`<stem>.nii.gz`, as nnU-Net names its outputs); auto: the LiTS name
    compressed (`test-segmentation-N.nii.gz`) when the input name carries a case number, else as input.
    """
    if naming not in NAMINGS:
        raise LitsError(f"naming={naming}: unknown; use one of {', '.join(NAMINGS)}")
    number = case_number(input_path)
    if naming == "input" or (naming == "auto" and number is None):
        return f"{nifti_stem(input_path)}.nii.gz"
    if number is None:
        raise LitsError(
            f"{input_path}: no case number in the name (volume-N / test-volume-N / liver_N) for naming=lits; "
            "rename the file or use naming=input"
        )
    return f"test-segmentation-{number}.nii" + ("" if naming == "lits" else ".gz")


def probability_name(label_name: str) -> str:
    """Probability-map file beside a label map: <stem>_probabilities.nii.gz."""
    return f"{nifti_stem(label_name)}_probabilities.nii.gz"


def orientation_from_meta(meta: dict) -> Orientation:
    """The Orientation a preprocessing cache records in meta['orientation'] (lists in JSON)."""
    return Orientation(
        ornt=np.asarray(meta["ornt"], dtype=np.float64),
        source_shape=tuple(int(n) for n in meta["source_shape"]),
        source_affine=np.asarray(meta["source_affine"], dtype=np.float64),
    )


def read_header(path: str | Path | None) -> nib.Nifti1Header | None:
    """The NIfTI header of `path` (reads only the header), or None when there is no readable file."""
    if path is None:
        return None
    try:
        return nib.load(str(path)).header.copy()
    except Exception:  # the CT was readable when it was cached; fall back to a header made from the affine
        return None


def _header_for(affine: np.ndarray, template: nib.Nifti1Header | None, dtype) -> nib.Nifti1Header:
    if template is not None:
        header = nib.Nifti1Header.from_header(template)  # NIfTI-2 / Analyze templates become NIfTI-1
    else:
        header = nib.Nifti1Header()
        header.set_qform(affine, code=1)  # 'scanner', as CT exports usually are
        header.set_sform(affine, code=1)
        header.set_xyzt_units("mm")
    header.set_data_dtype(dtype)
    return header


def save_nifti(
    path: str | Path, data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None = None, dtype=np.uint8
) -> Path:
    """Write `data` (source voxel order) with the given affine and header, atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine, header=_header_for(affine, header, dtype))
    if np.issubdtype(data.dtype, np.integer):
        img.header.set_slope_inter(1.0, 0.0)  # the CT's rescale (e.g. inter -1024) must not apply to labels
        img.header["cal_min"], img.header["cal_max"] = 0, 2  # viewers: show 0..2, not the CT's window
    else:
        img.header.set_slope_inter(np.nan, np.nan)  # float data into an integer type: nibabel picks the scale
        img.header["cal_min"], img.header["cal_max"] = 0, 1
    # the temp name keeps the real suffix: nibabel picks gzip from the name
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    with atomic_path(path, suffix) as tmp:
        nib.save(img, tmp)
    return path


def export_labels(
    path: str | Path, labels: np.ndarray, orientation: Orientation, header: nib.Nifti1Header | None = None
) -> Path:
    """Canonical (Z, Y, X) label map -> uint8 NIfTI with the input's shape, affine and header."""
    source = orientation.to_source(np.asarray(labels, dtype=np.uint8))
    if source.shape != tuple(orientation.source_shape):
        raise ValueError(f"label map {labels.shape} does not map back to the input's shape {orientation.source_shape}")
    return save_nifti(path, source, orientation.source_affine, header, np.uint8)


def export_probabilities(
    path: str | Path, probs: np.ndarray, orientation: Orientation, header: nib.Nifti1Header | None = None
) -> Path:
    """(2, Z, Y, X) liver/tumour probabilities -> 4D (X, Y, Z, 2) NIfTI on the input's grid.

    Stored as uint8 with a scale factor (nibabel picks scl_slope/inter): 1/255 of the range, 4x smaller than
    float32; any reader applying the scale (nibabel's get_fdata, ITK, 3D Slicer) gets the probabilities back.
    """
    channels = [orientation.to_source(np.asarray(p, dtype=np.float32)) for p in probs]
    return save_nifti(path, np.stack(channels, axis=-1), orientation.source_affine, header, np.uint8)
