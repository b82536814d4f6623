"""Atomic file writing: a temp file beside the target, renamed over it only once it is complete.

Readers (and a run killed mid-write) see either the old file or the new one, never half of one. Everything that
writes results goes through `atomic_path`: reports, exports, checkpoints, montages, skip lists.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from lits.core.errors import LitsError


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~umask()  # what a plain open() would give; mkstemp makes 0600 files
FOLDER_MODE = 0o777 & ~umask()  # what a plain mkdir would give; mkdtemp makes 0700 folders


STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
LOW_SPACE = 1 << 20  # bytes: a write that failed with less than this left failed for want of space


class WriteError(LitsError):
    """A file could not be written where it belongs (full disk, read-only or forbidden folder): one line naming it."""


def storage_problem(exc: BaseException, folder: Path) -> str | None:
    """Why writing into `folder` failed, if the storage is to blame: the OS's reason, or "no space left" when the
    file system is (nearly) full (torch.save and numpy report a full disk without an errno). None otherwise."""
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        return exc.strerror
    if isinstance(exc, (OSError, RuntimeError)):
        try:
            stats = os.statvfs(folder)
        except OSError:
            return None
        if stats.f_bavail * stats.f_frsize < LOW_SPACE:
            return "no space left on the device"
    return None


def write_error(path: Path, problem: str) -> WriteError:
    return WriteError(f"{path}: cannot write it ({problem}); free disk space or choose a writable folder")


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path (`.<name>.<random><suffix>` in the target's folder) to write; rename it to `path` on success.

    `suffix` keeps a meaningful extension where the writer picks the format from the name (nibabel: `.nii.gz`).
    On any exception the temp file is removed and the target is untouched; a full disk or an unwritable folder is a
    WriteError naming `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc.strerror or str(exc)) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        problem = storage_problem(exc, path.parent)  # before the temp file's space is freed again
        Path(tmp).unlink(missing_ok=True)
        if problem is not None:
            raise write_error(path, problem) from None
        raise


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX: the new directory entry survives a power cut). Best effort elsewhere."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def _json_safe(value):
    """NaN / inf -> null (JSON has no NaN; jq and browsers reject it); numpy scalars -> Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | Path, data) -> Path:
    return write_atomic(path, json.dumps(_json_safe(data), indent=2, default=float) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())


# Folder locks: an exclusive POSIX record lock (`fcntl.lockf`) on <folder>/.lock, which names its holder. Such a lock
# belongs to its process alone (forked workers do not inherit it) and the kernel drops it the moment the process dies,
# however it dies. Not POSIX: no locks (atomic renames still keep every file whole).
try:
    import fcntl
except ImportError:
    fcntl = None
_HELD_LOCKS: list[int] = []  # lock files held for the rest of this process's life


def open_lock(folder: Path) -> int:
    """The descriptor of <folder>/.lock (folder and file created if need be)."""
    folder.mkdir(parents=True, exist_ok=True)
    return os.open(folder / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)


def try_lock(fd: int) -> bool:
    """Take the lock now, or False when another process holds it."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def lock_holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it."""
    return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"


def claim_lock(fd: int) -> None:
    """Name this process as the holder (for a waiting or refused process's message)."""
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} (started {started})".encode(), 0)


def hold_folder_lock(folder: str | Path, what: str, fix: str) -> None:
    """Hold the lock of `folder` for the rest of this process's life, or refuse in one line naming the process that
    holds it. A killed holder's lock is free at once, so a crashed run's folder can be resumed."""
    if fcntl is None:
        return
    folder = Path(folder)
    fd = open_lock(folder)
    if not try_lock(fd):
        holder = lock_holder(fd)
        os.close(fd)
        raise LitsError(f"{folder}: {holder} is writing this {what}; {fix}")
    claim_lock(fd)
    _HELD_LOCKS.append(fd)


def check_writable_folder(folder: str | Path, what: str, fix: str) -> None:
    """Refuse (one LitsError line) a folder that cannot be created or written: probes the folder, or its nearest
    existing parent, with an empty temporary folder that is removed at once (permission bits alone do not tell: root
    ignores them, and read-only or special file systems refuse anyway)."""
    folder = Path(folder).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        reason = "a file is in the way"
    else:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".lits-probe-", dir=existing))
            return
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
    raise LitsError(f"{folder}: cannot write the {what} here ({reason} at {existing}); {fix}")
