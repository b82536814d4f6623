"""Find LiTS-layout NIfTI pairs, read them with nibabel, validate them and reorient to a canonical grid.

Every array leaving this module is slice-major (Z, Y, X) in RAS+ orientation, so slice z is contiguous in
memory and a memory-mapped cache can hand out slices cheaply. `Orientation` remembers how to undo it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from lits.errors import LitsError

LABELS = (0, 1, 2)  # background, liver, tumour
_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")


@dataclass(frozen=True)
class CasePaths:
    case_id: str
    image: Path
    label: Path | None  # None for unlabelled CTs (prediction only)


@dataclass(frozen=True)
class Orientation:
    """How a stored array maps back to the source file's voxel grid."""

    ornt: np.ndarray  # nibabel orientation from source axes to RAS+
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray

    def to_source(self, zyx: np.ndarray) -> np.ndarray:
        """Undo `to_canonical`: (Z, Y, X) canonical array -> the source file's (i, j, k) voxel order."""
        ras = np.transpose(zyx, (2, 1, 0))
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), self.ornt)
        return np.ascontiguousarray(nib.orientations.apply_orientation(ras, back))


@dataclass
class Case:
    case_id: str
    image: np.ndarray  # (Z, Y, X) float32 HU, canonical
    label: np.ndarray | None  # (Z, Y, X) uint8 in {0,1,2}, canonical
    spacing: tuple[float, float, float]  # (sz, sy, sx) mm, canonical order
    orientation: Orientation


def find_lits_pairs(root: str | Path) -> list[CasePaths]:
    """All `volume-N.nii[.gz]` under root (recursively) with their `segmentation-N.nii[.gz]` beside them."""
    root = Path(root)
    if not root.is_dir():
        raise LitsError(f"{root}: data folder not found; set data.root=DIR to a folder of LiTS volume-N/segmentation-N NIfTI pairs")
    cases: dict[str, CasePaths] = {}
    for image in sorted(root.rglob("volume-*.nii*")):
        match = _VOLUME.match(image.name)
        if not match:
            continue
        case_id = match.group(1)
        labels = [image.with_name(f"segmentation-{case_id}{ext}") for ext in (".nii", ".nii.gz")]
        label = next((p for p in labels if p.exists()), None)
        if label is None:
            raise LitsError(f"{image}: no segmentation-{case_id}.nii[.gz] beside it; add the label file or remove the volume")
        if case_id in cases:
            raise LitsError(f"{image}: case {case_id} also found at {cases[case_id].image}; keep one copy under {root}")
        cases[case_id] = CasePaths(case_id, image, label)
    if not cases:
        raise LitsError(f"{root}: no volume-N.nii[.gz] files found; point data.root at a LiTS-layout folder")
    return sorted(cases.values(), key=lambda c: int(c.case_id))


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Data (float32 after scl_slope/inter), affine and voxel sizes, or a one-line LitsError."""
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise LitsError(f"{path}: file not found; check data.root") from None
    except Exception as exc:  # nibabel raises many types for truncated / corrupt files
        raise LitsError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc}); re-download or re-export the file") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LitsError(f"{path}: expected a 3D CT volume, got shape {data.shape}; pass single 3D volumes")
    return data, img.affine, tuple(float(z) for z in img.header.get_zooms()[:3])


def to_canonical(xyz: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a source-order array to RAS+ and return it slice-major (Z, Y, X), with the orientation used."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(xyz, ornt)
    return np.ascontiguousarray(np.transpose(ras, (2, 1, 0))), ornt


def load_case(paths: CasePaths, affine_atol: float = 1e-3) -> Case:
    """Read, validate and reorient one image (and its label, if any)."""
    image, affine, zooms = _read(paths.image)
    if image.dtype.kind not in "iuf":
        raise LitsError(f"{paths.image}: voxel type {image.dtype} is not numeric; expected a CT in HU")
    image = image.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        raise LitsError(f"{paths.image}: contains NaN or infinite intensities; fix or exclude this volume")
    label = None
    if paths.label is not None:
        label_data, label_affine, _ = _read(paths.label)
        where = f"{paths.image} / {paths.label}"
        if label_data.shape != image.shape:
            raise LitsError(f"{where}: shapes {image.shape} vs {label_data.shape} differ; the segmentation must share the volume's voxel grid")
        if not np.allclose(affine, label_affine, atol=affine_atol, rtol=0):
            raise LitsError(f"{where}: affines differ by more than {affine_atol}; resample the segmentation onto the volume's grid")
        values = np.unique(label_data)
        if not np.isin(values, LABELS).all():
            bad = [v.item() for v in values if v not in LABELS][:5]
            raise LitsError(f"{paths.label}: label values {bad} outside {{0,1,2}}; LiTS labels are 0 background, 1 liver, 2 tumour")
        label, _ = to_canonical(label_data.astype(np.uint8), affine)
    canonical, ornt = to_canonical(image, affine)
    # zooms follow source axes; permute them to the canonical (Z, Y, X) order
    ras_zooms = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _) in enumerate(ornt):
        ras_zooms[int(target_axis)] = zooms[source_axis]
    spacing = (ras_zooms[2], ras_zooms[1], ras_zooms[0])
    orientation = Orientation(ornt=ornt, source_shape=tuple(image.shape), source_affine=np.asarray(affine))
    return Case(paths.case_id, canonical, label, spacing, orientation)
