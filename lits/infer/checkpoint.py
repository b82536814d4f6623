"""Reading checkpoints: weights_only loading, and the network with its inference spec rebuilt from one."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lits.core.errors import LitsError
from lits.core.files import atomic_path, fsync_dir
from lits.infer.networks import build_model
from lits.infer.spec import InferenceSpec, spec_from_checkpoint


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file named by ckpt=: the file itself, or a run folder (its checkpoints/best.pt) or its checkpoints
    folder (best.pt). One line saying what to pass when there is none."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "best.pt"):
            if candidate.is_file():
                return candidate
        raise LitsError(
            f"{path}: a folder without checkpoints/best.pt; pass ckpt=<run>/checkpoints/best.pt or last.pt "
            "(a run without an improved validation has only last.pt)"
        )
    if not path.is_file():
        raise LitsError(f"{path}: checkpoint not found; pass ckpt=outputs/<experiment>/<run>/checkpoints/best.pt")
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True (a checkpoint cannot run code); one-line errors for missing or corrupt files.
    `path`: as `checkpoint_file` takes it (a run folder means its best.pt)."""
    path = checkpoint_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LitsError(
            f"{path}: not a readable lits checkpoint ({type(exc).__name__}); use a best.pt/last.pt written by train.py"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise LitsError(f"{path}: missing model weights or config; use a best.pt/last.pt written by train.py")
    return state


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """torch.save to a temp file in the same folder, fsync, rename, fsync the folder: a kill mid-write never
    corrupts `path` (readers see the old checkpoint or the new one)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(path.parent)
    return path


def load_model(ckpt_path: str | Path, device: torch.device) -> tuple[torch.nn.Module, InferenceSpec, dict]:
    """(network in eval mode on `device`, its inference spec, the checkpoint dict), from a checkpoint alone."""
    state = load_checkpoint(ckpt_path)
    return (*model_from_state(state, ckpt_path, device), state)


def model_from_state(state: dict, where: str | Path, device: torch.device) -> tuple[torch.nn.Module, InferenceSpec]:
    """(network in eval mode on `device`, its inference spec) of a loaded checkpoint dict."""
    spec = spec_from_checkpoint(state, str(where))
    model = build_model(spec.network)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LitsError(
            f"{where}: weights do not fit the network its spec describes ({first}); the checkpoint is damaged or edited"
        ) from None
    # channels_last weights, as the predictor's batches are: a network and input in different memory formats run
    # their convolutions through conversions (measured on a 2-core AMD EPYC Zen 4, unet_small, 16 slices of 512 x 512:
    # 1.85 s per batch with contiguous weights, 1.30 s with channels_last ones)
    return model.to(device, memory_format=torch.channels_last).eval(), spec


def tuned_tta(state: dict) -> bool | None:
    """Whether the checkpoint's post-processing was tuned on flip-TTA probabilities (None: not tuned, or tuned before
    the tuning record said)."""
    if "tuning" in state and "tta" in state["tuning"]:
        return bool(state["tuning"]["tta"])
    return None


def checkpoint_epoch(state: dict) -> int:
    """The last epoch a checkpoint completed, numbered from 1 as lits shows epochs everywhere. Checkpoints of older
    lits (no "format" key) stored it counted from 0."""
    epoch = int(state["epoch"])
    return epoch if "format" in state else epoch + 1
