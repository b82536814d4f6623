"""Preprocess once: windowed, canonical, slice-major arrays on disk that training memory-maps.

Layout (nnU-Net style preprocess-once, with precomputed foreground locations):

    <cache_root>/<key>/<case_id>/image.npy   (Z, Y, X) float16, HU window scaled to [0, 1]
                                 label.npy   (Z, Y, X) uint8 {0, 1, 2}
                                 slices.npz  per-slice liver / tumour voxel counts and liver bounding boxes
                                 meta.json   spacing, source files (size, mtime), orientation

`key` hashes everything that changes the arrays (window, format version, source root), so a new window
gets a new cache and old runs keep theirs. Each case is written to a temporary folder and renamed into
place, so an interrupted run never leaves a half-written case; a case whose source file changed is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lits.data.nifti import CasePaths, load_case
from lits.errors import LitsError

FORMAT_VERSION = 1


def window_to_unit(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip HU to the window and scale linearly to [0, 1] (float32)."""
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise LitsError(f"data.window={list(window)}: the upper bound must exceed the lower bound, e.g. data.window=[-200,250]")
    return ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32)


def cache_key(window: tuple[float, float], source_root: str | Path) -> str:
    params = {"version": FORMAT_VERSION, "window": [float(w) for w in window], "root": str(Path(source_root).resolve())}
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def slice_stats(label: np.ndarray) -> dict[str, np.ndarray]:
    """Per-slice liver (label >= 1) and tumour (label == 2) voxel counts and liver boxes [y0, y1, x0, x1) (-1 if none)."""
    liver = label >= 1
    tumor = label == 2
    boxes = np.full((label.shape[0], 4), -1, dtype=np.int32)
    rows, cols = liver.any(axis=2), liver.any(axis=1)  # (Z, Y), (Z, X)
    has = rows.any(axis=1)
    z = np.flatnonzero(has)
    boxes[z, 0] = rows[z].argmax(axis=1)
    boxes[z, 1] = label.shape[1] - rows[z, ::-1].argmax(axis=1)
    boxes[z, 2] = cols[z].argmax(axis=1)
    boxes[z, 3] = label.shape[2] - cols[z, ::-1].argmax(axis=1)
    return {
        "liver_voxels": liver.sum(axis=(1, 2)).astype(np.int64),
        "tumor_voxels": tumor.sum(axis=(1, 2)).astype(np.int64),
        "liver_box": boxes,
    }


def _source_stamp(paths: CasePaths) -> dict:
    stamp = {}
    for kind, path in (("image", paths.image), ("label", paths.label)):
        if path is not None:
            st = path.stat()
            stamp[kind] = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return stamp


@dataclass
class CachedCase:
    """One preprocessed case; `image` and `label` are read-only memory maps."""

    case_id: str
    folder: Path
    image: np.ndarray
    label: np.ndarray | None
    stats: dict[str, np.ndarray]
    meta: dict

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(self.meta["spacing"])


def open_cached(folder: Path) -> CachedCase:
    meta = json.loads((folder / "meta.json").read_text())
    label_path = folder / "label.npy"
    with np.load(folder / "slices.npz") as npz:
        stats = {k: npz[k] for k in npz.files}
    return CachedCase(
        case_id=meta["case_id"],
        folder=folder,
        image=np.load(folder / "image.npy", mmap_mode="r"),
        label=np.load(label_path, mmap_mode="r") if label_path.exists() else None,
        stats=stats,
        meta=meta,
    )


def _is_current(folder: Path, paths: CasePaths) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("source") == _source_stamp(paths)


def _write_case(paths: CasePaths, folder: Path, window: tuple[float, float]) -> None:
    case = load_case(paths)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.save(tmp / "image.npy", window_to_unit(case.image, window).astype(np.float16))
        label = case.label if case.label is not None else np.zeros(case.image.shape, np.uint8)
        if case.label is not None:
            np.save(tmp / "label.npy", label)
        np.savez(tmp / "slices.npz", **slice_stats(label))
        meta = {
            "case_id": case.case_id,
            "shape": list(case.image.shape),
            "spacing": list(case.spacing),
            "window": list(window),
            "source": _source_stamp(paths),
            "orientation": {
                "ornt": case.orientation.ornt.tolist(),
                "source_shape": list(case.orientation.source_shape),
                "source_affine": case.orientation.source_affine.tolist(),
            },
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if folder.exists():  # stale: source changed
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_cache(
    cases: list[CasePaths],
    cache_root: str | Path,
    window: tuple[float, float],
    source_root: str | Path,
    progress: bool = True,
) -> list[CachedCase]:
    """Preprocess every case not already cached (or whose source changed) and open them all."""
    folder = Path(cache_root) / cache_key(window, source_root)
    todo = [c for c in cases if not _is_current(folder / c.case_id, c)]
    for paths in tqdm(todo, desc=f"preprocessing -> {folder}", unit="case", disable=not progress or not todo):
        _write_case(paths, folder / paths.case_id, window)
    return [open_cached(folder / c.case_id) for c in cases]
