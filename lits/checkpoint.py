"""Self-describing checkpoints: weights + training state + the resolved config, written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from lits.errors import LitsError


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """torch.save to a temp file in the same folder, then rename: a kill mid-write never corrupts `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True (a checkpoint cannot run code); one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise LitsError(f"{path}: checkpoint not found; pass ckpt=outputs/<experiment>/<run>/checkpoints/best.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LitsError(f"{path}: not a readable lits checkpoint ({type(exc).__name__}); use a best.pt/last.pt written by train.py") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise LitsError(f"{path}: missing model weights or config; use a best.pt/last.pt written by train.py")
    return state
