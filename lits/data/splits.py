"""Patient-level splits: seeded fractions, explicit case-id lists, a JSON split file, or fold k of a k-fold CV.

`data.split` (all keys optional):
    val, test: a fraction of all cases (drawn with the split seed) or an explicit list of case ids
    train:     null = every remaining case, or an explicit list (cases in no list are then unused)
    seed:      null = the run seed; set it to keep one split across runs with different seeds
    file:      a JSON split file; when set it decides (the keys above are ignored):
               {"train": [...], "val": [...], "test": [...]}  (our split.json; missing train = the rest)
               [{"train": [...], "val": [...]}, ...]          (nnU-Net splits_final.json: one entry per fold)
               {"folds": [[...], [...], ...], "test": [...]}  (fold k is val, the other folds are train)
`data.fold=k` of `data.num_folds`: the test cases are held out first (same for every k), the rest is
shuffled with the split seed and cut into num_folds folds; fold k is val and the others train.
Case ids may be written as numbers or as file-style names (`liver_3`, `volume-3`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lits.core.config import DataConfig, typed
from lits.core.errors import LitsError
from lits.data.sources import id_from_filename, natural_key

SPLITS = ("train", "val", "test")


def split_cases(case_ids: list[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Patient-level split, deterministic from the seed; every case in exactly one split, val and test non-empty."""
    n = len(case_ids)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise LitsError(
            f"only {n} cases: too few for data.split val={val_fraction} test={test_fraction}; add cases or lower the "
            "fractions"
        )
    order = np.random.default_rng(seed).permutation(n)
    ids = [case_ids[i] for i in order]
    split = {"val": ids[:n_val], "test": ids[n_val : n_val + n_test], "train": ids[n_val + n_test :]}
    return {k: sorted(v, key=natural_key) for k, v in split.items()}


def _resolve_ids(raw, known: set[str], where: str) -> list[str]:
    if not isinstance(raw, (list, tuple)):
        raise LitsError(f"{where}: expected a list of case ids, got {raw!r}; write e.g. [0, 5, 17]")
    out, unknown = [], []
    for item in raw:
        text = str(item).strip()
        case_id = text if text in known else id_from_filename(text)
        (out if case_id in known else unknown).append(case_id if case_id in known else text)
    if unknown:
        raise LitsError(
            f"{where}: case ids {unknown[:5]} are not in the data ({len(known)} cases found); fix the list or data.root"
        )
    if len(set(out)) != len(out):
        dup = sorted({c for c in out if out.count(c) > 1}, key=natural_key)
        raise LitsError(f"{where}: case ids {dup[:5]} listed twice; list each case once")
    return out


def _fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise LitsError(
            f"data.split.{name}={value!r}: give a fraction in [0, 1) or a list of case ids, e.g. data.split.{name}=0.15"
        )
    return float(value)


def _count(n: int, fraction: float) -> int:
    return max(1, round(n * fraction)) if fraction > 0 else 0


def _check(splits: dict[str, list[str]], where: str) -> dict[str, list[str]]:
    seen: dict[str, str] = {}
    for name in SPLITS:
        for case_id in splits.get(name) or []:
            if case_id in seen:
                raise LitsError(
                    f"{where}: case {case_id} is in both {seen[case_id]} and {name}; put each case in one split"
                )
            seen[case_id] = name
    for name in ("train", "val"):
        if not splits.get(name):
            raise LitsError(f"{where}: the {name} split is empty; give it at least one case")
    return {name: sorted(splits.get(name) or [], key=natural_key) for name in SPLITS}


def _folds(ids: list[str], num_folds: int, fold: int, seed: int, where: str) -> tuple[list[str], list[str]]:
    if len(ids) < num_folds:
        raise LitsError(f"{where}: {len(ids)} cases cannot make data.num_folds={num_folds} folds; lower data.num_folds")
    ordered = sorted(ids, key=natural_key)
    order = np.random.default_rng([seed, 7919]).permutation(len(ordered))
    parts = np.array_split(np.array([ordered[i] for i in order], dtype=object), num_folds)
    val = [str(c) for c in parts[fold]]
    train = [str(c) for k, part in enumerate(parts) if k != fold for c in part]
    return train, val


def read_split_file(path: str | Path, case_ids: list[str], fold: int | None) -> dict[str, list[str]]:
    """A JSON split file in one of the three formats of the module docstring."""
    path = Path(path).expanduser()
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise LitsError(f"{path}: split file not found; fix data.split.file") from None
    except (OSError, ValueError) as exc:
        raise LitsError(f"{path}: not a readable JSON split file ({exc}); fix the file or data.split.file") from None
    known = set(case_ids)
    if isinstance(spec, list):  # nnU-Net splits_final.json
        if fold is None:
            raise LitsError(f"{path}: holds {len(spec)} folds; choose one with data.fold=0..{len(spec) - 1}")
        if fold >= len(spec) or not isinstance(spec[fold], dict):
            raise LitsError(
                f"{path}: data.fold={fold} but the file holds {len(spec)} folds; choose data.fold=0..{len(spec) - 1}"
            )
        entry = spec[fold]
        splits = {name: _resolve_ids(entry.get(name) or [], known, f"{path} fold {fold} {name}") for name in SPLITS}
        return _check(splits, str(path))
    if not isinstance(spec, dict):
        raise LitsError(
            f"{path}: expected a JSON object with train/val/test lists (or folds), or a list of folds; fix the file"
        )
    unknown = set(spec) - {"train", "val", "test", "folds"}
    if unknown:
        raise LitsError(f"{path}: unknown keys {sorted(unknown)}; use train, val, test (or folds + test)")
    test = _resolve_ids(spec.get("test") or [], known, f"{path} test")
    if "folds" in spec:
        folds = spec["folds"]
        if fold is None or not isinstance(folds, list) or fold >= len(folds):
            count = len(folds) if isinstance(folds, list) else 0
            raise LitsError(f"{path}: holds {count} folds; choose one with data.fold=0..{max(count - 1, 0)}")
        parts = [_resolve_ids(part, known, f"{path} folds[{k}]") for k, part in enumerate(folds)]
        splits = {
            "val": parts[fold],
            "train": [c for k, part in enumerate(parts) if k != fold for c in part],
            "test": test,
        }
        return _check(splits, str(path))
    if fold is not None:
        raise LitsError(
            f"{path}: has no folds but data.fold={fold} is set; set data.fold=null or use a file with folds"
        )
    val = _resolve_ids(spec.get("val") or [], known, f"{path} val")
    if "train" in spec:
        train = _resolve_ids(spec["train"], known, f"{path} train")
    else:
        taken = set(val) | set(test)
        train = [c for c in case_ids if c not in taken]
    return _check({"train": train, "val": val, "test": test}, str(path))


def make_splits(case_ids: list[str], data_cfg: DataConfig, seed: int) -> dict[str, list[str]]:
    """The train/val/test case ids the config asks for (see the module docstring)."""
    data = typed(DataConfig, data_cfg, "data")
    case_ids = sorted(case_ids, key=natural_key)
    spec, fold, num_folds = data.split, data.fold, data.num_folds
    if spec.file:
        return read_split_file(spec.file, case_ids, fold)
    seed = int(seed if spec.seed is None else spec.seed)
    val_spec, test_spec, train_spec = spec.val, spec.test, spec.train
    known = set(case_ids)
    plain_fractions = not isinstance(val_spec, list) and not isinstance(test_spec, list) and train_spec is None
    if plain_fractions and fold is None:  # the original seeded split, unchanged
        return split_cases(case_ids, _fraction(val_spec, "val"), _fraction(test_spec, "test"), seed)

    train = _resolve_ids(train_spec, known, "data.split.train") if train_spec is not None else None
    test = _resolve_ids(test_spec, known, "data.split.test") if isinstance(test_spec, list) else None
    if fold is not None and isinstance(val_spec, list):
        raise LitsError(
            f"data.split.val is a list but data.fold={fold} is set: the fold is the validation set; drop one of them"
        )
    val = _resolve_ids(val_spec, known, "data.split.val") if isinstance(val_spec, list) else None
    fixed = set(train or []) | set(test or []) | set(val or [])
    pool = [case_ids[i] for i in np.random.default_rng(seed).permutation(len(case_ids)) if case_ids[i] not in fixed]
    n = len(case_ids)
    if val is None and fold is None:
        k = _count(n, _fraction(val_spec, "val"))
        val, pool = pool[:k], pool[k:]
    if test is None:
        k = _count(n, _fraction(test_spec, "test"))
        if k > len(pool) - (0 if train is not None else 1):
            raise LitsError(f"only {n} cases: too few for data.split test={test_spec}; add cases or lower the fraction")
        test, pool = pool[:k], pool[k:]
    if fold is not None:
        cv_ids = train if train is not None else pool
        train, val = _folds(cv_ids, num_folds, fold, seed, f"data.fold={fold}")
    elif train is None:
        train = pool
    return _check({"train": train, "val": val, "test": test}, "data.split")
