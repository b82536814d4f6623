"""Cases and data sets: generate_case, and generate_dataset writing a LiTS-format folder of NIfTI files
with a manifest of the settings it was made with."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lits.core.config.synthetic import SyntheticParams
from lits.core.errors import LitsError
from lits.core.files import FOLDER_MODE
from lits.data.synthetic.anatomy import Phantom
from lits.data.synthetic.params import GENERATOR_VERSION
from lits.data.synthetic.writer import BackgroundWriter

_DEFAULT_PARAMS = SyntheticParams()  # frozen: one shared default is safe
_COMPRESSLEVEL = 1  # gzip level for .nii.gz: level 1 is ~5x faster than 9 and only ~10% larger


def case_filenames(index: int) -> tuple[str, str]:
    """LiTS names of case ``index``: ``("volume-N.nii.gz", "segmentation-N.nii.gz")``."""
    return f"volume-{index}.nii.gz", f"segmentation-{index}.nii.gz"


def _check_ids(index: int, seed: int) -> None:
    if int(index) != index or index < 0:
        raise LitsError(f"synthetic data: case index must be a non-negative integer, got {index!r}")
    if int(seed) != seed or seed < 0:
        raise LitsError(f"synthetic data: seed must be a non-negative integer, got {seed!r}; fix data.synthetic.seed")


def generate_case(
    index: int, seed: int = 0, params: SyntheticParams = _DEFAULT_PARAMS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (volume int16 HU, segmentation uint8, affine float64 4x4); arrays in NIfTI voxel
    order (X, Y, Z), affine ``diag(-s, -s, sz)`` + origin (axis codes L, P, S).

    Depends only on (seed, index): the same inputs give byte-identical arrays."""
    _check_ids(index, seed)
    rng = np.random.default_rng([int(seed), int(index)])
    return Phantom(rng, params).build()


def _nifti(data: np.ndarray, affine: np.ndarray, descrip: str):
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    hdr.set_xyzt_units(xyz="mm", t="sec")
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr["descrip"] = descrip.encode()[:79]
    return img


def _save_nifti(img, path: Path) -> None:
    import nibabel as nib

    old = nib.openers.Opener.default_compresslevel
    nib.openers.Opener.default_compresslevel = _COMPRESSLEVEL
    try:
        nib.save(img, str(path))
    finally:
        nib.openers.Opener.default_compresslevel = old


def _write_case(folder: Path, i: int, seed: int, vol: np.ndarray, seg: np.ndarray, aff: np.ndarray) -> None:
    vname, sname = case_filenames(i)
    _save_nifti(_nifti(vol, aff, f"lits synthetic seed={seed} case={i}"), folder / vname)
    _save_nifti(_nifti(seg, aff, f"lits synthetic seed={seed} case={i} labels"), folder / sname)


MANIFEST = "synthetic.json"  # the generator settings a data set was made with


def manifest(num_cases: int, seed: int, params: SyntheticParams) -> dict:
    """The JSON-ready record written to MANIFEST: generator version, case count, seed and every generator setting."""
    params_json = json.loads(json.dumps(asdict(params)))
    return {"generator": GENERATOR_VERSION, "num_cases": int(num_cases), "seed": int(seed), "params": params_json}


def _temp_prefix(root: Path) -> str:
    """The hidden temporary sibling a data set is generated in, naming its writer: .<root>.tmp-<host>-<pid>-"""
    return f".{root.name}.tmp-{socket.gethostname()}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_dead_leftovers(root: Path) -> list[Path]:
    """Delete the temporary siblings of `root` left by generators that were killed: those of this host whose process
    is gone (a live generator's folder, or one of another host sharing the folder, is left alone). Returns them."""
    pattern = re.compile(rf"^\.{re.escape(root.name)}\.tmp-{re.escape(socket.gethostname())}-(\d+)-[^-]+$")
    removed = []
    for path in root.parent.glob(f".{root.name}.tmp-*") if root.parent.is_dir() else []:
        match = pattern.match(path.name)
        if path.is_dir() and match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def generate_dataset(
    root: str | Path, num_cases: int, seed: int = 0, params: SyntheticParams = _DEFAULT_PARAMS, progress: bool = True
) -> Path:
    """Writes volume-N.nii.gz / segmentation-N.nii.gz (N = 0..num_cases-1) into ``root``.

    Atomic: the cases are generated into a temporary sibling directory that is renamed to
    ``root`` only when every case is written, so an interrupted run leaves no partial data set
    (a hard kill can leave a hidden ``.<root>.tmp-<host>-<pid>-*`` sibling, never a half-filled ``root``; the next
    call removes such leftovers of dead processes).
    Raises LitsError if ``root`` already exists and is non-empty. Returns ``root``."""
    from tqdm.auto import tqdm

    root = Path(root).expanduser()
    _check_ids(0, seed)
    if int(num_cases) != num_cases or num_cases < 1:
        raise LitsError(
            f"synthetic data: num_cases must be a positive integer, got {num_cases!r}; fix data.synthetic.num_cases"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise LitsError(
            f"{root}: synthetic data target already exists and is not an empty folder; "
            f"delete it or choose another folder (data.root / --out)"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(root)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(root), dir=root.parent))
    try:
        os.chmod(tmp, FOLDER_MODE)  # mkdtemp makes it private; the data set is not
        with BackgroundWriter() as writer:
            for i in tqdm(
                range(int(num_cases)), desc=f"synthetic LiTS -> {root.name}", unit="case", disable=not progress
            ):
                writer.submit(_write_case, tmp, i, seed, *generate_case(i, seed, params))
        (tmp / MANIFEST).write_text(json.dumps(manifest(num_cases, seed, params), indent=1))
        try:
            os.replace(tmp, root)  # replaces an empty directory atomically; fails if non-empty
        except OSError as exc:
            raise LitsError(
                f"{root}: could not move the generated data set into place ({exc}); "
                f"another process may have written it meanwhile: delete it and rerun"
            ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
