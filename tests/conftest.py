"""Shared test helpers: tiny LiTS-layout NIfTI pairs written by the tests themselves."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lits.core.errors import LitsError
from lits.data.cache import CachedCase, cache_cases
from lits.data.nifti import CasePaths
from lits.data.preprocess import Preprocessing
from lits.data.sources import find_lits

REPO = Path(__file__).resolve().parents[1]


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))
    return path


def one_line_error(result):
    """The entry points' contract for bad input: exit 2 and exactly one `error: ...` line on stderr."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    return lines[0]


def make_case(shape=(40, 36, 12), seed=0, tumor=True):
    """(volume int16 HU, segmentation uint8) in source (X, Y, Z) order: a liver block with an optional tumour."""
    rng = np.random.default_rng(seed)
    seg = np.zeros(shape, np.uint8)
    seg[8:30, 6:28, 2:10] = 1
    if tumor:
        seg[14:20, 12:18, 4:7] = 2
    vol = rng.normal(0, 10, shape) + np.choose(seg, [-50, 120, 60])
    return vol.astype(np.int16), seg


@pytest.fixture
def lits_tree(tmp_path):
    """A folder with three LiTS-layout pairs (one without tumour), non-trivial affine."""
    root = tmp_path / "lits"
    root.mkdir()
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    for i in range(3):
        vol, seg = make_case(seed=i, tumor=i != 1)
        write_nifti(root / f"volume-{i}.nii.gz", vol, affine)
        write_nifti(root / f"segmentation-{i}.nii.gz", seg, affine)
    return root


def find_lits_pairs(root) -> list[CasePaths]:
    """All `volume-N.nii[.gz]` under root (recursively) with their `segmentation-N.nii[.gz]`; the first problem
    raises."""
    cases, problems = find_lits(root)
    if problems:
        raise LitsError(problems[0].reason)
    return cases


def build_cache(
    cases: list[CasePaths],
    cache_root: str | Path,
    window: tuple[float, float],
    source_root: str | Path,
    progress: bool = True,
    target_spacing_xy=None,
    workers: int = 1,
) -> list[CachedCase]:
    """Preprocess every case not yet cached (or whose source changed) and open them all; the first bad case raises."""
    prep = Preprocessing(window=tuple(window), target_spacing_xy=target_spacing_xy)
    cached, _ = cache_cases(cases, cache_root, prep, source_root, progress, workers, on_error="fail")
    return [cached[c.case_id] for c in cases]
