"""Atomic file writing: a temp file beside the target, renamed over it only once it is complete.

Readers (and a run killed mid-write) see either the old file or the new one, never half of one. Everything that
writes results goes through `atomic_path`: reports, exports, checkpoints, montages, skip lists.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np


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


def write_json(path: str | Path, data) -> Path:
    return write_atomic(path, json.dumps(_json_safe(data), indent=2, default=float) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())
