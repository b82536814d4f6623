"""Atomic file writing: a temp file beside the target, renamed over it only once it is complete.

Readers (and a run killed mid-write) see either the old file or the new one, never half of one. Everything that
writes results goes through `atomic_path`: reports, exports, checkpoints, montages, skip lists.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~umask()  # what a plain open() would give; mkstemp makes 0600 files


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path (`.<name>.<random><suffix>` in the target's folder) to write; rename it to `path` on success.

    `suffix` keeps a meaningful extension where the writer picks the format from the name (nibabel: `.nii.gz`).
    On any exception the temp file is removed and the target is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
