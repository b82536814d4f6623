"""Who may write into a cache folder, and what killed writers leave behind.

A process writing cases into <cache_root>/<key> holds an exclusive flock on <key>/.lock, so concurrent preparers
(DDP ranks, a second prepare_data run) wait instead of racing. Each case is written into a temporary folder named
by `temp_prefix` and renamed into place; a stale case is first renamed to `trash_path` and then deleted. Both
names are recognisable, so whoever next holds the lock removes what a killed run left (`remove_leftovers`).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

TEMP_MARKER = ".tmp-"  # temporary case folders: .<case>.tmp-<host>-<pid>-<random>
TRASH_MARKER = ".old-"  # stale case folders on their way out: .<case>.old-<random>


def temp_prefix(folder: Path) -> str:
    """The `tempfile.mkdtemp` prefix for a case folder being written: hidden, and naming its writer."""
    return f".{folder.name}{TEMP_MARKER}{socket.gethostname()}-{os.getpid()}-"


def trash_path(folder: Path) -> Path:
    """A unique hidden name beside `folder` to rename it to before deleting it (readers never see it half-deleted)."""
    return folder.with_name(f".{folder.name}{TRASH_MARKER}{uuid.uuid4().hex[:8]}")


@contextmanager
def exclusive_lock(folder: Path, progress: bool):
    """Hold <folder>/.lock: concurrent preparers (DDP ranks, a second prepare_data run) wait instead of racing."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames still keep every case whole
        yield
        return
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(f"waiting for another process preparing {folder} ...", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary and stale case folders of killed runs; call only while holding the lock (nobody else
    is writing them then)."""
    for path in folder.glob(".*"):
        if path.is_dir() and (TEMP_MARKER in path.name or TRASH_MARKER in path.name):
            shutil.rmtree(path, ignore_errors=True)
