"""The data stage as train/evaluate see it: make sure the data exists, cache it, split it by patient."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from lits.data.cache import CachedCase, build_cache
from lits.data.nifti import find_lits_pairs
from lits.errors import LitsError

SPLITS = ("train", "val", "test")


def ensure_synthetic(data_cfg) -> None:
    """Generate the embedded synthetic data set into data.root on first use (data=synthetic only)."""
    from lits.data.synthetic import MANIFEST, SyntheticParams, generate_dataset, manifest

    synth = data_cfg.get("synthetic")
    if not synth:
        return
    known = {f.name for f in fields(SyntheticParams)}
    unknown = set(synth) - known - {"num_cases", "seed"}
    if unknown:
        raise LitsError(f"data.synthetic.{sorted(unknown)[0]}: unknown generator setting; valid: {sorted(known | {'num_cases', 'seed'})}")
    plain = OmegaConf.to_container(synth) if OmegaConf.is_config(synth) else dict(synth)
    params = SyntheticParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in plain.items() if k in known})
    root = Path(data_cfg.root)
    if root.exists():
        wanted = manifest(synth.num_cases, synth.seed, params)
        found = json.loads((root / MANIFEST).read_text()) if (root / MANIFEST).exists() else None
        if found is not None and found != wanted:
            changed = sorted(k for k in wanted["params"] if wanted["params"][k] != found["params"].get(k))
            changed += [k for k in ("num_cases", "seed") if wanted[k] != found[k]]
            raise LitsError(f"{root}: generated with other synthetic settings ({', '.join(changed)}); delete the folder to regenerate or set data.root elsewhere")
        return
    print(f"generating {synth.num_cases} synthetic LiTS-format cases into {data_cfg.root} (once)")
    generate_dataset(data_cfg.root, num_cases=int(synth.num_cases), seed=int(synth.seed), params=params)


def split_cases(case_ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Patient-level split, deterministic from the seed; every case in exactly one split, val and test non-empty."""
    n = len(case_ids)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise LitsError(f"only {n} cases: too few for data.split val={val_fraction} test={test_fraction}; add cases or lower the fractions")
    order = np.random.default_rng(seed).permutation(n)
    ids = [case_ids[i] for i in order]
    split = {"val": ids[:n_val], "test": ids[n_val : n_val + n_test], "train": ids[n_val + n_test :]}
    return {k: sorted(v, key=_natural) for k, v in split.items()}


def _natural(case_id: str):
    return (0, int(case_id)) if case_id.isdigit() else (1, case_id)


def prepare(data_cfg, seed: int, splits: dict[str, list[str]] | None = None, only: tuple[str, ...] = SPLITS,
            progress: bool = True) -> tuple[dict[str, list[str]], dict[str, list[CachedCase]]]:
    """Generate (synthetic), discover, split (unless `splits` is given, e.g. from a checkpoint) and cache.

    Returns the split (case ids) and the cached cases of the splits named in `only`.
    """
    ensure_synthetic(data_cfg)
    pairs = {p.case_id: p for p in find_lits_pairs(data_cfg.root)}
    if splits is None:
        splits = split_cases(list(pairs), data_cfg.split.val, data_cfg.split.test, seed)
    missing = [cid for name in only for cid in splits[name] if cid not in pairs]
    if missing:
        raise LitsError(f"{data_cfg.root}: cases {missing[:5]} of the split are missing; point data.root at the data the model was trained on")
    wanted = [pairs[cid] for name in only for cid in splits[name]]
    cached = {c.case_id: c for c in build_cache(wanted, data_cfg.cache_dir, tuple(data_cfg.window), data_cfg.root, progress)}
    return splits, {name: [cached[cid] for cid in splits[name]] for name in only}


def write_split(splits: dict[str, list[str]], path: Path) -> None:
    path.write_text(json.dumps(splits, indent=1))
