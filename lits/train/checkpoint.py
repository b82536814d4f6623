"""Self-describing checkpoints: weights + training state + the resolved config, written atomically.

Writing (lits.infer.checkpoint.save_checkpoint): torch.save into a temp file in the same folder, fsync, rename over
the target, fsync the folder. A kill at any moment leaves either the previous file or the new one, never a torn one
(a killed write leaves at most a `.<name>.*` temp file, removed by `remove_stale_temps` when the next run starts).

Reading: `torch.load(weights_only=True)`, so a checkpoint cannot run code. Everything a checkpoint holds is therefore
tensors and plain Python values (the RNG states below are converted accordingly).

Resuming (`trainer.resume`): `resume_path` finds the checkpoint, `check_compatible` refuses one whose network differs
from the configured one, `rng_state` / `set_rng_state` carry the random generators across the restart.
"""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from lits.core.config.model import NON_ARCHITECTURE_KEYS
from lits.core.errors import LitsError
from lits.core.files import atomic_path

UNSET = "<unset>"  # a key one of two configs lacks
NO_EPOCH = 0  # a best record's epoch (numbered from 1) before any epoch was validated


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


def _best_record(path: Path) -> dict | None:
    """best.pt's own {metric, value, epoch}, read without loading its tensors; None if missing or unreadable."""
    try:
        return dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["best"])
    except Exception:  # missing, or damaged outside lits (its writes are atomic): counted as missing
        return None


def reconcile_best(saved: dict | None, ckpt_dir: str | Path, resumed_from: str | Path | None) -> str | None:
    """Make the best that a run counts from the one best.pt holds, before training continues (rank 0).

    `saved`: the checkpoint resumed from (None: a fresh start), its "best" record replaced in place by best.pt's own;
    `ckpt_dir`: this run's checkpoints/. best.pt is written before last.pt records it, so after a kill best.pt is the
    one last.pt records or one epoch ahead of it (the epoch about to be redone): either way best.pt's record is kept,
    and the redone epoch replaces best.pt only if it beats it. A best.pt behind last.pt's record (removed by hand, or
    written by an older lits that saved last.pt first) cannot be rebuilt: the run counts from what best.pt holds,
    with a warning. Resuming another run's checkpoint into a new folder copies that run's best.pt along; a fresh start
    removes a best.pt left by an attempt killed before its first last.pt. Returns what was done (None: nothing).
    """
    best = Path(ckpt_dir) / "best.pt"
    if saved is None:
        if best.is_file():
            best.unlink()
            return f"{best}: left by an attempt killed before its first last.pt; removed, this run starts afresh"
        return None
    source = Path(resumed_from).parent / "best.pt"
    if source.is_file() and not best.is_file() and source.resolve() != best.resolve():
        with atomic_path(best) as tmp:
            shutil.copyfile(source, tmp)
    recorded, held = dict(saved["best"]), _best_record(best)
    if held == recorded:
        return None
    if held is None:
        saved["best"] = {**recorded, "value": -math.inf, "epoch": NO_EPOCH}
        if "tiebreak_value" in recorded:
            saved["best"]["tiebreak_value"] = -math.inf
        if recorded["epoch"] <= NO_EPOCH:
            return None
        return (
            f"{best}: missing or unreadable, although {resumed_from} records the best {recorded['metric']}="
            f"{recorded['value']:.4f} at epoch {recorded['epoch']}: those weights are lost; the best is "
            "counted afresh from here"
        )
    saved["best"] = held
    if held["epoch"] > recorded["epoch"]:  # a stop between the two saves: best.pt is the newer one
        return None
    return (
        f"{best}: holds epoch {held['epoch']} ({held['metric']}={held['value']:.4f}) but {resumed_from} "
        f"records the best at epoch {recorded['epoch']} ({recorded['value']:.4f}), whose weights are lost; "
        "the best is counted from best.pt's"
    )


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


# Settings whose saved state only fits their own kind: the optimizer's moments (AdamW) or momentum buffers (SGD), and
# the learning-rate scheduler's state.
STATEFUL_OPTIM_KEYS = ("name", "schedule")


def check_compatible(state: dict, config: dict, path: str | Path) -> None:
    """Refuse a checkpoint whose network (model.*, input channels), optimizer or LR schedule kind differs from
    `config` (the run's resolved config): their saved states would not load into the new ones."""
    old = state["config"]
    for key in STATEFUL_OPTIM_KEYS:
        before, after = old["optim"][key], config["optim"][key]
        if before != after:
            raise LitsError(
                f"{path}: trained with optim.{key}={before}, resumed with optim.{key}={after}; its saved optimizer "
                f"state belongs to {before}: resume with optim.{key}={before}, or start a new run "
                "(trainer.resume=null, another hydra.run.dir)"
            )
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
