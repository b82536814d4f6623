"""Self-describing checkpoints: weights + training state + the resolved config, written atomically.

Writing: torch.save into a temp file in the same folder, fsync, rename over the target, fsync the folder. A kill at
any moment leaves either the previous file or the new one, never a torn one (a killed write leaves at most a
`.<name>.*` temp file, removed by `remove_stale_temps` when the next run starts).

Reading: `torch.load(weights_only=True)`, so a checkpoint cannot run code. Everything a checkpoint holds is therefore
tensors and plain Python values (the RNG states below are converted accordingly).

Resuming (`trainer.resume`): `resume_path` finds the checkpoint, `check_compatible` refuses one whose network differs
from the configured one, `rng_state` / `set_rng_state` carry the random generators across the restart.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from lits.core.config.model import NON_ARCHITECTURE_KEYS
from lits.core.errors import LitsError
from lits.infer.checkpoint import write_checkpoint

UNSET = "<unset>"  # a key one of two configs lacks


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write a training checkpoint atomically (lits.infer.checkpoint.write_checkpoint: temp file, fsync, rename)."""
    return write_checkpoint(state, path)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete `.<name>.pt.*` temp files that a killed save_checkpoint left behind (call before training starts)."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.pt.*") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


# ---------------------------------------------------------------------------------------------- resuming
def resume_path(setting, run_dir: str | Path) -> Path | None:
    """The checkpoint `trainer.resume` asks for, or None for a fresh start.

    null / false: fresh start, refused if the run folder already holds a run (checkpoints/last.pt) -- nothing is
    overwritten silently. auto: <run dir>/checkpoints/last.pt when it exists, else a fresh start. A path: that
    checkpoint file, or a run folder (its checkpoints/last.pt); it must exist.
    """
    last = Path(run_dir) / "checkpoints" / "last.pt"
    if setting is None or setting is False or str(setting).lower() in ("null", "none", "false", ""):
        if last.is_file():
            raise LitsError(
                f"{last.parent.parent}: this run folder already holds a training run; continue it with "
                "trainer.resume=auto, or start a new one elsewhere (another hydra.run.dir)"
            )
        return None
    if str(setting) == "auto":
        return last if last.is_file() else None
    path = Path(str(setting)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.pt" if (path / "checkpoints").is_dir() else path / "last.pt"
    if not path.is_file():
        raise LitsError(
            f"trainer.resume={setting}: {path} not found; give a last.pt (or its run folder), "
            "auto (this run folder's last.pt) or null (fresh start)"
        )
    return path


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """'key: old -> new' for every leaf that differs between two plain config dicts (keys under `ignore` skipped)."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if any(key == i or key.startswith(i + ".") for i in ignore):
            continue
        before, after = a.get(key, UNSET), b.get(key, UNSET)
        if before != after:
            out.append(f"{key}: {before} -> {after}")
    return out


def check_compatible(state: dict, config: dict, path: str | Path) -> None:
    """Refuse a checkpoint whose network (model.*, input channels) differs from `config` (the run's resolved config)."""
    old = state["config"]
    old_net = {"model": old["model"], "context_slices": old["data"]["context_slices"]}
    new_net = {"model": config["model"], "context_slices": config["data"]["context_slices"]}
    ignore = tuple(f"model.{k}" for k in NON_ARCHITECTURE_KEYS)
    diffs = config_differences(old_net, new_net, ignore=ignore)
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise LitsError(
            f"{path}: checkpoint of a different network ({shown}); resume with the model settings it was "
            "trained with, or start a new run (trainer.resume=null, another hydra.run.dir)"
        )


# ---------------------------------------------------------------------------------------------- RNG states
def rng_state(device: torch.device, generators: dict[str, torch.Generator] | None = None) -> dict:
    """Python, NumPy, torch CPU (and this process's CUDA device) generator states, plus named torch Generators,
    as tensors and plain values (loadable with weights_only=True)."""
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": str(key),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
    }
    for name, gen in (generators or {}).items():
        state[name] = gen.get_state()
    return state


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def set_rng_state(state: dict, device: torch.device, generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
    for name, gen in (generators or {}).items():
        if name in state:
            gen.set_state(state[name])
