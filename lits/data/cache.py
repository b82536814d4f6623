"""Preprocess once: windowed, canonical, slice-major arrays on disk that training memory-maps.

Layout (nnU-Net style preprocess-once, with precomputed foreground locations):

    <cache_root>/<key>/<case_id>/image.npy         (Z, Y, X) float16, HU window scaled to [0, 1]
                                 label.npy         (Z, Y, X) uint8 {0, 1, 2}
                                 slices.npz        per-slice liver / tumour voxel counts and bounding boxes
                                 meta.json         spacing, source files (size, mtime), orientation, native grid,
                                                   liver z-range
                                 label_native.npy  only with data.target_spacing_xy: the label on the native grid
                                                   (for metrics)
    <cache_root>/<key>/.lock                       held while a process writes into <key> (other processes wait)

`key` hashes everything that changes the arrays (format version, window, in-plane target spacing, source root),
so a new setting gets a new cache and old runs keep theirs. Full volumes are always stored (evaluation needs
them); the training slice range (liver z-range plus a margin) is chosen when the cache is opened.

Each case is streamed slab by slab into a temporary folder and renamed into place, so an interrupted run
never leaves a half-written case, and a rerun continues with the cases still missing; a case whose source file
changed is rebuilt. Cases are preprocessed by a pool of processes (`workers`), each holding one volume.
What is done to the arrays is in `lits.data.preprocess`; the lock and the cleanup after killed runs are in
`lits.data.cache_lock`.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lits.core.errors import LitsError
from lits.core.files import FOLDER_MODE, storage_problem
from lits.data.cache_lock import exclusive_lock, init_worker, remove_leftovers, temp_prefix, trash_path
from lits.data.nifti import CasePair, CasePaths, open_pair
from lits.data.preprocess import Preprocessing, slice_stats, window_to_unit
from lits.data.resample import resize_inplane, resize_labels, target_shape, to_native
from lits.data.sources import Problem

FORMAT_VERSION = 2


class CacheWriteError(LitsError):
    """The cache folder cannot be written (full disk, permissions): not a problem of one case, never skipped."""


@contextmanager
def _storage_errors(folder: Path):
    try:
        yield
    except (OSError, RuntimeError) as exc:
        problem = storage_problem(exc, folder if folder.exists() else folder.parent)
        if problem is not None:
            raise CacheWriteError(
                f"{folder}: cannot write the preprocessing cache ({problem}); "
                f"free disk space or set data.cache_dir to a writable folder"
            ) from None
        raise


def _open_array(path: Path, dtype, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy memory map with its blocks allocated now: a full disk is an OSError here, not a SIGBUS later when
    the mapped pages are written."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return array


def cache_key(window: tuple[float, float], source_root: str | Path, target_spacing_xy=None) -> str:
    """The cache folder's name: 12 hex digits of a hash of the format version, window, resolved source root and, when
    set, the in-plane target spacing."""
    params = {
        "version": FORMAT_VERSION,
        "window": [float(w) for w in window],
        "root": str(Path(source_root).expanduser().resolve()),
    }
    if target_spacing_xy is not None:
        params["target_spacing_xy"] = [float(s) for s in target_spacing_xy]
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


def key_folder(cache_root: str | Path, prep: Preprocessing, source_root: str | Path) -> Path:
    """<cache_root>/<key>: the folder holding the cases of source_root preprocessed with prep."""
    return Path(cache_root).expanduser() / cache_key(prep.window, source_root, prep.target_spacing_xy)


def _source_stamp(paths: CasePaths) -> dict:
    stamp = {}
    for kind, path in (("image", paths.image), ("label", paths.label)):
        if path is not None:
            st = path.stat()
            stamp[kind] = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return stamp


@dataclass
class CachedCase:
    """One preprocessed case; `image` and `label` are read-only memory maps of the full volume."""

    case_id: str
    folder: Path
    image: np.ndarray
    label: np.ndarray | None
    stats: dict[str, np.ndarray]
    meta: dict

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(sz, sy, sx) mm of the cached grid."""
        return tuple(self.meta["spacing"])

    @property
    def native_spacing(self) -> tuple[float, float, float]:
        """(sz, sy, sx) mm of the source volume's grid (canonical order): the grid metrics are computed on."""
        return tuple(self.meta["native"]["spacing"])

    @property
    def native_label(self) -> np.ndarray | None:
        """The label on the native canonical grid (a memmap; `label` itself unless the cache was resampled)."""
        path = self.folder / "label_native.npy"
        return np.load(path, mmap_mode="r") if path.exists() else self.label

    def to_native(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """(..., Z, y, x) on the cached grid -> the native canonical grid; identity without resampling."""
        return to_native(array, self.meta, order)


def open_cached(folder: Path) -> CachedCase:
    try:
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
    except (OSError, ValueError, KeyError) as exc:  # someone edited or truncated files of a finished case
        raise LitsError(
            f"{folder}: damaged cache folder ({type(exc).__name__}: {exc}); delete it and rerun to rebuild it"
        ) from None


def _is_current(folder: Path, paths: CasePaths) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    needed = ["image.npy", "slices.npz"] + (["label.npy"] if paths.label is not None else [])
    return (
        meta.get("format") == FORMAT_VERSION
        and meta.get("source") == _source_stamp(paths)
        and all((folder / name).is_file() for name in needed)
    )


def _publish(tmp: Path, folder: Path) -> None:
    """Rename a finished temporary case folder into place (replacing a stale one); atomic for readers."""
    if folder.exists():  # stale (source changed) or written meanwhile by another process
        trash = trash_path(folder)
        with suppress(FileNotFoundError):
            os.replace(folder, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process published the same case in between: theirs is as good as ours
        shutil.rmtree(tmp, ignore_errors=True)


def write_case(paths: CasePaths, folder: Path, prep: Preprocessing) -> None:
    """Validate, reorient, window (and resample) one case, streaming slabs into a temp folder; then rename it into
    place. A full disk or an unwritable folder raises CacheWriteError."""
    with _storage_errors(folder.parent):
        _write_case(paths, folder, prep)


def _write_case(paths: CasePaths, folder: Path, prep: Preprocessing) -> None:
    pair = open_pair(paths, prep.affine_atol)
    out_yx = pair.shape[1:]
    if prep.target_spacing_xy is not None:
        out_yx = target_shape(out_yx, pair.spacing[1:], prep.target_spacing_xy)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(folder), dir=folder.parent))
    os.chmod(tmp, FOLDER_MODE)  # mkdtemp makes it private; a shared data.cache_dir must stay readable to others
    try:
        stats = _write_arrays(pair, out_yx, prep.window, tmp)
        np.savez(tmp / "slices.npz", **stats)
        (tmp / "meta.json").write_text(json.dumps(_case_meta(paths, pair, prep, out_yx, stats), indent=1))
        _publish(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_arrays(
    pair: CasePair, out_yx: tuple[int, int], window: tuple[float, float], tmp: Path
) -> dict[str, np.ndarray]:
    """Stream the pair slab by slab into tmp: image.npy, label.npy and, when out_yx is not the native in-plane size,
    label_native.npy. Returns the slice statistics of the cached label (no liver anywhere when unlabelled)."""
    z_count, height, width = pair.shape
    resampled = out_yx != (height, width)
    image = _open_array(tmp / "image.npy", np.float16, (z_count, *out_yx))
    label = native = None
    if pair.label is not None:
        label = _open_array(tmp / "label.npy", np.uint8, (z_count, *out_yx))
        if resampled:
            native = _open_array(tmp / "label_native.npy", np.uint8, (z_count, height, width))
    parts = []
    for z0, hu, lab in pair.chunks():
        unit = window_to_unit(hu, window)
        del hu
        if resampled:
            unit = resize_inplane(unit, out_yx, order=1)
        image[z0 : z0 + len(unit)] = unit
        if lab is not None:
            if resampled:
                native[z0 : z0 + len(lab)] = lab
                lab = resize_labels(lab, out_yx)
            label[z0 : z0 + len(lab)] = lab
            parts.append(slice_stats(lab))
    for array in (image, label, native):
        if array is not None:
            array.flush()
    del image, label, native
    if parts:
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return slice_stats(np.zeros((z_count, 1, 1), np.uint8))  # unlabelled: no liver anywhere


def _case_meta(
    paths: CasePaths, pair: CasePair, prep: Preprocessing, out_yx: tuple[int, int], stats: dict[str, np.ndarray]
) -> dict:
    """meta.json of a case cached on an out_yx in-plane grid: what `open_cached` and `_is_current` read."""
    z_count, height, width = pair.shape
    sz, sy, sx = pair.spacing
    liver_z = np.flatnonzero(stats["liver_voxels"] > 0)
    orientation = pair.orientation
    return {
        "format": FORMAT_VERSION,
        "case_id": paths.case_id,
        "shape": [z_count, *out_yx],
        "spacing": [sz, sy * height / out_yx[0], sx * width / out_yx[1]],
        "window": list(prep.window),
        "target_spacing_xy": None if prep.target_spacing_xy is None else list(prep.target_spacing_xy),
        "resampled": out_yx != (height, width),
        "native": {"shape": [z_count, height, width], "spacing": [sz, sy, sx]},
        "liver_z": [int(liver_z[0]), int(liver_z[-1]) + 1] if len(liver_z) else None,
        "source": _source_stamp(paths),
        "source_dtype": str(pair.image.raw.dtype),
        "warning": pair.warning,  # doubtful intensities (lits.data.intensity), logged whenever the case is used
        "scaling": [pair.image.slope, pair.image.inter],
        "orientation": {
            "ornt": orientation.ornt.tolist(),
            "source_shape": list(orientation.source_shape),
            "source_affine": orientation.source_affine.tolist(),
        },
    }


def _write_job(paths: CasePaths, folder: str, prep: Preprocessing) -> tuple[str, str | None]:
    """Pool entry point: (case_id, None) or (case_id, the LitsError message)."""
    try:
        write_case(paths, Path(folder), prep)
        return paths.case_id, None
    except CacheWriteError:
        raise
    except LitsError as exc:
        return paths.case_id, str(exc)


def _pool_context():
    """fork where available (like DataLoader workers: the children only run numpy/nibabel/scipy, and nothing of
    the caller's `__main__` is re-imported, so unguarded scripts and notebooks work), else spawn."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def cache_cases(
    cases: list[CasePaths],
    cache_root: str | Path,
    prep: Preprocessing,
    source_root: str | Path,
    progress: bool = True,
    workers: int = 1,
    on_error: str = "fail",
    lock_timeout_min: float = 30.0,
) -> tuple[dict[str, CachedCase], list[Problem]]:
    """Preprocess every case not already cached (or whose source changed), `workers` processes at a time.

    on_error="fail": the first bad case raises its LitsError (cases finished so far stay cached).
    on_error="skip": bad cases are returned as Problems and left out. Returns ({case_id: CachedCase}, problems).
    A stop signal (an exception raised by its handler) ends the work at once: running workers are killed, their
    temporary folders removed, finished cases kept. Another process preparing the same folder is waited for
    (`lock_timeout_min` without progress at most).
    """
    folder = key_folder(cache_root, prep, source_root)
    problems: list[Problem] = []
    todo = [c for c in cases if not _is_current(folder / c.case_id, c)]
    if todo:
        with _storage_errors(folder), exclusive_lock(folder, lock_timeout_min):
            remove_leftovers(folder)
            todo = [c for c in todo if not _is_current(folder / c.case_id, c)]  # another process may have done them
            problems = _run(todo, folder, prep, progress, workers, on_error)
    failed = {p.case_id for p in problems}
    return {c.case_id: open_cached(folder / c.case_id) for c in cases if c.case_id not in failed}, problems


def _run(
    todo: list[CasePaths], folder: Path, prep: Preprocessing, progress: bool, workers: int, on_error: str
) -> list[Problem]:
    problems: list[Problem] = []
    by_id = {c.case_id: c for c in todo}

    def record(case_id: str, error: str | None) -> None:
        if error is None:
            return
        if on_error != "skip":
            raise LitsError(f"{error}; or set data.on_error=skip to leave such cases out")
        problems.append(Problem(case_id, str(by_id[case_id].image), error))

    bar = tqdm(
        total=len(todo),
        desc=f"preprocessing {len(todo)} cases -> {folder}",
        unit="case",
        disable=not progress or not todo,
        dynamic_ncols=True,
    )
    try:
        workers = max(1, min(int(workers), len(todo)))
        if workers == 1:
            for paths in todo:
                record(*_write_job(paths, str(folder / paths.case_id), prep))
                bar.update()
        else:
            _run_pool(todo, folder, prep, workers, record, bar)
        return problems
    finally:
        bar.close()


def _run_pool(todo: list[CasePaths], folder: Path, prep: Preprocessing, workers: int, record, bar) -> None:
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=_pool_context(), initializer=init_worker, initargs=(os.getpid(),)
    )
    try:
        futures = {pool.submit(_write_job, c, str(folder / c.case_id), prep): c.case_id for c in todo}
        for future in as_completed(futures):
            try:
                record(*future.result())
            except BrokenProcessPool:
                raise LitsError(
                    f"a preprocessing process died while preparing case {futures[future]} (out of memory?); "
                    f"lower data.prepare_workers (each holds one volume) and rerun: finished cases are kept"
                ) from None
            bar.update()
    except (KeyboardInterrupt, SystemExit):  # a stop signal: now, not after the cases in progress
        _kill_workers(pool, folder)
        raise
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # a failed case: let the running ones finish (they are kept)
        raise
    pool.shutdown(wait=True)


def _kill_workers(pool: ProcessPoolExecutor, folder: Path) -> None:
    """Kill a pool's workers mid-case and remove their temporary folders (the caller still holds the lock)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.kill()
    for process in processes:
        process.join(timeout=10)
    pool.shutdown(wait=False, cancel_futures=True)
    remove_leftovers(folder)
