"""Read NIfTI CT/label pairs with nibabel, validate them and reorient to a canonical grid.

Every array leaving this module is slice-major (Z, Y, X) in RAS+ orientation, so slice z is contiguous in
memory and a memory-mapped cache can hand out slices cheaply. `Orientation` remembers how to undo it.

Two ways in, one validation path:
* `open_pair` reads the headers (and the raw stored voxels, without scaling them to float) and checks
  shapes and affines; `CasePair.chunks()` then yields canonical slabs of a few slices, scaled to HU and
  validated (finite intensities, labels in {0, 1, 2}). The preprocessing cache streams these, so a
  1000-slice int16 volume costs its stored size plus one slab, not 4-8 bytes per voxel several times over.
* `load_case` concatenates the slabs: whole float32 HU arrays, for prediction and tests.

Case discovery (LiTS / MSD / CSV layouts) lives in `lits.data.sources`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from lits.core.errors import LitsError
from lits.data.intensity import IntensityCheck

LABELS = (0, 1, 2)  # background, liver, tumour
CHUNK_SLICES = 32  # canonical slices per slab when streaming a volume
# Voxels one volume may have: 4x the largest LiTS CT (512 x 512 x 987). A header claiming more (a corrupt or hostile
# file: 3000^3 int16 fits in a 1 kB gzip) is refused before its voxels are allocated.
MAX_VOXELS = 1_000_000_000


def header_problem(path: Path, header) -> str | None:
    """Why a NIfTI header cannot be a CT volume lits reads (one line naming the file and the fix), or None: 3D after
    dropping trailing singleton axes, at most MAX_VOXELS voxels."""
    shape = tuple(int(n) for n in header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1) is a 3D volume
        shape = shape[:-1]
    if len(shape) != 3:
        return (
            f"{path}: expected a 3D CT volume, got shape {shape}; pass single 3D volumes "
            "(split 4D series, stack 2D slices into a volume)"
        )
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > MAX_VOXELS:
        size_gb = voxels * header.get_data_dtype().itemsize / 1e9
        return (
            f"{path}: its header claims {shape[0]} x {shape[1]} x {shape[2]} voxels ({size_gb:.0f} GB), more than "
            f"the {MAX_VOXELS:,} lits reads; the file is corrupt or not a CT: re-export it"
        )
    return None


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
        """Undo `to_canonical`: (Z, Y, X) canonical array -> the source file's (i, j, k) voxel order.

        A view (a transpose and flips, no copy): NIfTI stores voxels i-fastest (Fortran order), which is exactly the
        memory order of this view of a C-ordered canonical array, so nibabel writes it without transposing."""
        ras = np.transpose(zyx, (2, 1, 0))
        back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), self.ornt)
        return nib.orientations.apply_orientation(ras, back)


@dataclass
class Case:
    case_id: str
    image: np.ndarray  # (Z, Y, X) float32 HU, canonical
    label: np.ndarray | None  # (Z, Y, X) uint8 in {0,1,2}, canonical
    spacing: tuple[float, float, float]  # (sz, sy, sx) mm, canonical order
    orientation: Orientation
    warning: str | None = None  # doubtful intensities (lits.data.intensity)


@dataclass
class _Source:
    """One opened NIfTI file: stored voxels (not yet scaled), scaling, geometry."""

    path: Path
    raw: np.ndarray  # stored dtype, source (i, j, k) order; a memmap for uncompressed .nii
    slope: float
    inter: float
    affine: np.ndarray
    zooms: tuple[float, float, float]

    def scaled(self, block: np.ndarray) -> np.ndarray:
        out = np.asarray(block, dtype=np.float32)
        if self.slope != 1.0 or self.inter != 0.0:
            out = out * np.float32(self.slope) + np.float32(self.inter)
        return out


def _open(path: Path, scaled: bool = False) -> _Source:
    """Header + stored voxels of one file, or a one-line LitsError naming it."""
    try:
        img = nib.load(str(path))
        problem = header_problem(path, img.header)
        if problem:
            raise LitsError(problem)
        proxy = img.dataobj
        raw = np.asanyarray(proxy) if scaled else proxy.get_unscaled()
        slope = None if scaled else getattr(proxy, "slope", None)
        inter = None if scaled else getattr(proxy, "inter", None)
        slope = 1.0 if slope is None else float(slope)
        inter = 0.0 if inter is None else float(inter)
    except FileNotFoundError:
        raise LitsError(f"{path}: file not found; check data.root") from None
    except (MemoryError, LitsError):
        raise
    except Exception as exc:  # nibabel, gzip and zlib raise many types for truncated / corrupt files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LitsError(
            f"{path}: cannot read NIfTI ({type(exc).__name__}: {detail}); re-download or re-export the file"
        ) from None
    while raw.ndim > 3 and raw.shape[-1] == 1:  # 3D by header_problem's rule
        raw = raw[..., 0]
    if raw.dtype.kind not in "iuf":
        raise LitsError(f"{path}: voxel type {raw.dtype} is not numeric; expected a CT in HU / integer labels")
    if not (np.isfinite(slope) and np.isfinite(inter)):
        raise LitsError(f"{path}: non-finite scl_slope/scl_inter in the header; re-export the file")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    if not np.isfinite(img.affine).all() or abs(np.linalg.det(img.affine[:3, :3])) < 1e-12:
        raise LitsError(f"{path}: degenerate affine (voxel-to-world matrix); re-export the file with valid geometry")
    return _Source(Path(path), raw, slope, inter, np.asarray(img.affine, dtype=np.float64), zooms)


def to_canonical(xyz: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient a source-order array to RAS+ and return it slice-major (Z, Y, X), with the orientation used."""
    view, ornt = canonical_view(xyz, affine)
    return np.ascontiguousarray(view), ornt


def canonical_view(xyz: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like `to_canonical`, but a view (flips and transposes only): slabs of it can be copied one at a time."""
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(xyz, ornt)
    return np.transpose(ras, (2, 1, 0)), ornt


def canonical_spacing(zooms, ornt) -> tuple[float, float, float]:
    """Source-order voxel sizes -> (sz, sy, sx) in canonical order."""
    ras = [0.0, 0.0, 0.0]
    for source_axis, (target_axis, _) in enumerate(ornt):
        ras[int(target_axis)] = float(zooms[source_axis])
    return ras[2], ras[1], ras[0]


def _label_values_ok(block: np.ndarray) -> np.ndarray | None:
    """None if every value is 0, 1 or 2; else up to 5 offending values."""
    if block.dtype == np.uint8 and (block.size == 0 or block.max() <= 2):
        return None
    bad = (block != 0) & (block != 1) & (block != 2)
    if not bad.any():
        return None
    values = np.unique(block[bad])[:5]
    return [int(v) if float(v).is_integer() else float(v) for v in values.tolist()]


@dataclass
class CasePair:
    """A validated-at-header-level image (and label): stream canonical HU / label slabs with `chunks()`."""

    paths: CasePaths
    image: _Source
    label: _Source | None
    ornt: np.ndarray
    spacing: tuple[float, float, float]
    warning: str | None = None  # set once `chunks()` has read every slab: an implausible-intensity warning

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical (Z, Y, X) shape."""
        return tuple(int(n) for n in self._image_view().shape)

    @property
    def orientation(self) -> Orientation:
        return Orientation(
            ornt=self.ornt, source_shape=tuple(int(n) for n in self.image.raw.shape), source_affine=self.image.affine
        )

    def _image_view(self) -> np.ndarray:
        return np.transpose(nib.orientations.apply_orientation(self.image.raw, self.ornt), (2, 1, 0))

    def chunks(self, size: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        """(z0, HU float32 (n, Y, X), label uint8 (n, Y, X) or None) for consecutive canonical slabs, validated.

        After the last slab the intensities are judged (`lits.data.intensity`): an implausible CT raises a LitsError
        then, a doubtful one sets `warning`."""
        size = size or CHUNK_SLICES
        intensity = IntensityCheck()
        image_view = self._image_view()
        label_view = None
        if self.label is not None:
            label_view = np.transpose(nib.orientations.apply_orientation(self.label.raw, self.ornt), (2, 1, 0))
        for z0 in range(0, image_view.shape[0], size):
            hu = self.image.scaled(image_view[z0 : z0 + size])
            check = (
                self.image.raw.dtype.kind == "f" or self.image.slope != 1.0 or self.image.inter != 0.0
            )  # else integers: finite
            if check and not np.isfinite(hu).all():
                raise LitsError(f"{self.paths.image}: contains NaN or infinite intensities; fix or exclude this volume")
            intensity.add(hu)
            label = None
            if label_view is not None:
                block = np.asarray(label_view[z0 : z0 + size])
                bad = _label_values_ok(block)
                if bad is not None:
                    raise LitsError(
                        f"{self.paths.label}: label values {bad} outside {{0,1,2}}; LiTS labels are 0 background, 1 "
                        "liver, 2 tumour"
                    )
                label = block.astype(np.uint8, copy=False)
            yield z0, hu, label
        error, self.warning = intensity.verdict(self.paths.image)
        if error:
            raise LitsError(error)


def open_pair(paths: CasePaths, affine_atol: float = 1e-3) -> CasePair:
    """Open image (and label), check shapes and affines agree; voxel checks happen while streaming `chunks()`."""
    image = _open(paths.image)
    label = None
    if paths.label is not None:
        label = _open(paths.label, scaled=True)  # labels: small integers, whatever the stored type
        where = f"{paths.image} / {paths.label}"
        if label.raw.shape != image.raw.shape:
            raise LitsError(
                f"{where}: shapes {image.raw.shape} vs {label.raw.shape} differ; the segmentation must share the "
                "volume's voxel grid"
            )
        if not np.allclose(image.affine, label.affine, atol=affine_atol, rtol=0):
            diff = float(np.abs(image.affine - label.affine).max())
            raise LitsError(
                f"{where}: affines differ by {diff:.3g} (more than data.affine_atol={affine_atol}); "
                "resample the segmentation onto the volume's grid, or raise data.affine_atol if it is only header "
                "rounding"
            )
    ornt = nib.orientations.io_orientation(image.affine)
    return CasePair(paths, image, label, ornt, canonical_spacing(image.zooms, ornt))


def load_case(paths: CasePaths, affine_atol: float = 1e-3) -> Case:
    """Read, validate and reorient one image (and its label, if any): whole arrays in memory."""
    pair = open_pair(paths, affine_atol)
    image = np.empty(pair.shape, np.float32)
    label = np.empty(pair.shape, np.uint8) if pair.label is not None else None
    for z0, hu, lab in pair.chunks():
        image[z0 : z0 + len(hu)] = hu
        if label is not None:
            label[z0 : z0 + len(lab)] = lab
    return Case(paths.case_id, image, label, pair.spacing, pair.orientation, pair.warning)
