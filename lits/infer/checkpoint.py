"""Reading checkpoints: weights_only loading, and the network and settings inference needs from them."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

from lits.core.errors import LitsError
from lits.data.normalization import Normalization
from lits.infer.networks import build_model, size_multiple


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True (a checkpoint cannot run code); one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise LitsError(f"{path}: checkpoint not found; pass ckpt=outputs/<experiment>/<run>/checkpoints/best.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LitsError(
            f"{path}: not a readable lits checkpoint ({type(exc).__name__}); use a best.pt/last.pt written by train.py"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise LitsError(f"{path}: missing model weights or config; use a best.pt/last.pt written by train.py")
    return state


def load_model(ckpt_path: str | Path, device):
    """Model (eval mode, on device), the training config and the checkpoint dict, from a checkpoint alone."""
    state = load_checkpoint(ckpt_path)
    train_cfg = OmegaConf.create(state["config"])
    model = build_model(train_cfg.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LitsError(
            f"{ckpt_path}: weights do not fit the model its config describes ({first}); the checkpoint is damaged or edited"
        ) from None
    return model.to(device).eval(), train_cfg, state


def network_settings(train_cfg, state: dict | None = None) -> dict:
    """predict_volume's keyword arguments that a training run fixes: input size multiple, sigmoid temperature,
    2.5D context slices (absent from older checkpoints' configs: 0) and, from the checkpoint `state`, the input
    normalisation (absent: the HU window)."""
    return {
        "size_multiple": size_multiple(train_cfg.model),
        "temperature": float(train_cfg.loss.temperature),
        "context_slices": int(train_cfg.data.get("context_slices", 0) or 0),
        "normalization": Normalization.from_dict((state or {}).get("normalization")),
    }
