"""Who may write into a cache folder, what killed writers leave behind, and pool workers that die with their parent.

A process writing cases into <cache_root>/<key> holds an exclusive POSIX record lock (`fcntl.lockf`) on <key>/.lock,
so concurrent preparers (DDP ranks, a second prepare_data run) wait instead of racing. Such a lock belongs to the
process alone: forked pool workers do not inherit it, and the kernel drops it the moment its owner dies, however it
dies (SIGKILL included), so a waiting process takes over at once. The lock file names its owner (host and pid) for the
waiting message; a wait without progress gives up after `data.lock_timeout_min` with one line naming the owner.

Each case is written into a temporary folder named by `temp_prefix` and renamed into place; a stale case is first
renamed to `trash_path` and then deleted. Both names are recognisable, so whoever next holds the lock removes what a
killed run left (`remove_leftovers`). Pool workers (`init_worker`) die with their parent (Linux: the parent-death
signal; elsewhere a watchdog thread), ignore Ctrl-C (the parent stops them) and die of SIGTERM.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from lits.core import files
from lits.core.errors import LitsError
from lits.core.files import claim_lock, lock_holder, open_lock, try_lock

log = logging.getLogger(__name__)

TEMP_MARKER = ".tmp-"  # temporary case folders: .<case>.tmp-<host>-<pid>-<random>
TRASH_MARKER = ".old-"  # stale case folders on their way out: .<case>.old-<random>
POLL_S = 0.5  # how often a waiting process tries the lock again


def temp_prefix(folder: Path) -> str:
    """The `tempfile.mkdtemp` prefix for a case folder being written: hidden, and naming its writer."""
    return f".{folder.name}{TEMP_MARKER}{socket.gethostname()}-{os.getpid()}-"


def trash_path(folder: Path) -> Path:
    """A unique hidden name beside `folder` to rename it to before deleting it (readers never see it half-deleted)."""
    return folder.with_name(f".{folder.name}{TRASH_MARKER}{uuid.uuid4().hex[:8]}")


def _progress_mark(folder: Path) -> tuple:
    """What changes while a preparer works: the folder's entries (published and temporary cases)."""
    try:
        return tuple(sorted(os.listdir(folder)))
    except OSError:
        return ()


def _wait(fd: int, folder: Path, timeout_min: float) -> None:
    """Take the lock, waiting for its holder as long as the folder keeps changing (at most timeout_min without)."""
    owner = lock_holder(fd)
    log.warning("waiting for %s, which is preparing %s ...", owner, folder)
    mark, since = _progress_mark(folder), time.monotonic()
    while True:
        time.sleep(POLL_S)  # a stop signal interrupts this sleep
        if try_lock(fd):
            return
        now = _progress_mark(folder)
        if now != mark:
            mark, since = now, time.monotonic()
        elif time.monotonic() - since > timeout_min * 60:
            raise LitsError(
                f"{folder}: waited {timeout_min:g} min for {owner} preparing this cache without seeing progress; "
                "stop that process (or wait for it), or raise data.lock_timeout_min"
            )


@contextmanager
def exclusive_lock(folder: Path, timeout_min: float = 30.0):
    """Hold <folder>/.lock (see the module doc); a dead holder's lock is free at once, a live one is waited for."""
    folder.mkdir(parents=True, exist_ok=True)
    if files.fcntl is None:  # not POSIX: atomic renames still keep every case whole
        yield
        return
    fd = open_lock(folder)
    try:
        if not try_lock(fd):
            _wait(fd, folder, timeout_min)
        claim_lock(fd)
        yield
    finally:
        os.close(fd)  # releases the lock (so would the process's death)


def remove_leftovers(folder: Path) -> None:
    """Delete the temporary and stale case folders of killed runs; call only while holding the lock (nobody else
    is writing them then)."""
    for path in folder.glob(".*"):
        if path.is_dir() and (TEMP_MARKER in path.name or TRASH_MARKER in path.name):
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- pool workers
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def init_worker(parent_pid: int) -> None:
    """ProcessPoolExecutor initializer: die with the parent, leave Ctrl-C to it, die of SIGTERM (the handlers a
    forked worker inherits would defer both)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if not _parent_death_signal():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the above took effect
        os._exit(1)


def _parent_death_signal() -> bool:
    """Linux: the kernel SIGKILLs this process when its parent dies. False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    """The portable fallback: exit once this process has been re-parented (its parent is gone)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)
