"""The data stage as train/evaluate see it: make sure the data exists, find it, split it by patient, cache it.

prepare(data_cfg, seed) -> (splits, {split: [CachedCase]})
    1. data=synthetic: generate the data set on first use
    2. discover the cases of data.root in the data.layout format (lits | msd | csv)
    3. split them (fractions, explicit lists, a JSON file or a fold: lits.data.splits), unless `splits` is given
    4. preprocess what is not cached yet (data.prepare_workers processes) and open the cache (memory maps)
    5. mark each case's training slice range: the liver z-range plus data.liver_margin_mm

Cases that cannot be used (missing label, unreadable file, bad labels, ...) raise the first problem as one
LitsError line (data.on_error=fail), or are left out of the split, logged one by one and written to
`<report_dir>/skipped_cases.json` (data.on_error=skip): never silently.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import nibabel as nib

from lits.core.config import DataConfig, typed
from lits.core.errors import LitsError
from lits.core.files import atomic_path
from lits.data.cache import CachedCase, cache_cases, key_folder
from lits.data.nifti import header_problem
from lits.data.preprocess import Preprocessing, liver_z_range
from lits.data.sources import Problem, discover, natural_key
from lits.data.splits import SPLITS, make_splits, split_cases  # noqa: F401  split_cases: public, used by tests

log = logging.getLogger(__name__)
SKIPPED_FILE = "skipped_cases.json"


def ensure_synthetic(data_cfg: DataConfig, as_is: bool = False) -> None:
    """Generate the embedded synthetic data set into data.root on first use (data=synthetic only).

    An existing folder made by another generator version or with other settings is refused for a new run (its cases
    are not what the config describes); with `as_is` (a checkpoint's own split is being read: evaluation, tuning,
    resume) it is read as it is, with one line saying so: it holds the data the checkpoint was trained on."""
    from lits.data.synthetic import MANIFEST, generate_dataset, manifest

    data = typed(DataConfig, data_cfg, "data")
    synth = data.synthetic
    if synth is None or data.name != "synthetic":  # e.g. debug=smoke's generator keys under data=lits
        return
    root = Path(data.root)
    if root.exists():
        wanted = manifest(synth.num_cases, synth.seed, synth.params)
        found = json.loads((root / MANIFEST).read_text()) if (root / MANIFEST).exists() else None
        # A manifest file, not a setting: version 1 of the generator wrote no "generator" field.
        found_version = None if found is None else found.get("generator", 1)
        if as_is and found is not None and found != wanted:
            log.warning("%s: made by synthetic generator version %s%s; read as it is: the data the checkpoint was "
                        "trained on", root, found_version, "" if found_version != wanted["generator"] else
                        " with other settings")  # fmt: skip
            return
        if found is not None and found_version != wanted["generator"]:
            raise LitsError(
                f"{root}: made by synthetic generator version {found_version}, this lits makes version "
                f"{wanted['generator']} (other lesions); delete the folder to regenerate or set data.root elsewhere"
            )
        if found is not None and found != wanted:
            changed = sorted(k for k in wanted["params"] if wanted["params"][k] != found["params"].get(k))
            changed += [k for k in ("num_cases", "seed") if wanted[k] != found[k]]
            raise LitsError(
                f"{root}: generated with other synthetic settings ({', '.join(changed)}); "
                f"delete the folder to regenerate or set data.root elsewhere"
            )
        return
    print(f"generating {synth.num_cases} synthetic LiTS-format cases into {data.root} (once)")
    generate_dataset(data.root, num_cases=synth.num_cases, seed=synth.seed, params=synth.params)


def _workers(data: DataConfig) -> int:
    return data.prepare_workers if data.prepare_workers is not None else min(4, os.cpu_count() or 1)


def write_skipped(problems: list[Problem], splits: dict[str, list[str]], report_dir: str | Path) -> Path:
    """`<report_dir>/skipped_cases.json`: one record per left-out case (case, split, path, reason), written
    atomically."""
    where = {cid: name for name, ids in splits.items() for cid in ids}
    records = [{**p.as_dict(), "split": where.get(p.case_id)} for p in problems]
    path = Path(report_dir) / SKIPPED_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(records, indent=1))
    return path


def _report(problems: list[Problem], splits: dict[str, list[str]], report_dir) -> None:
    if not problems:
        return
    for p in problems:
        log.warning("skipped case %s: %s", p.case_id, p.reason)
    where = ""
    if report_dir is not None:
        where = f"; listed in {write_skipped(problems, splits, report_dir)}"
    log.warning("data.on_error=skip: %d case(s) left out%s", len(problems), where)


def _discover(data_cfg, on_error: str, as_is: bool = False) -> tuple[list, list[Problem]]:
    """Generate (synthetic) and find the cases; with on_error=fail the first problem stops here. `as_is`: an existing
    synthetic folder is read whatever made it (ensure_synthetic)."""
    ensure_synthetic(data_cfg, as_is)
    found, problems = discover(data_cfg)
    if problems and on_error == "fail":
        more = f" ({len(problems) - 1} more such cases)" if len(problems) > 1 else ""
        raise LitsError(f"{problems[0].reason}{more}; or set data.on_error=skip to leave such cases out")
    return found, problems


def prepare(
    data_cfg,
    seed: int,
    splits: dict[str, list[str]] | None = None,
    only: tuple[str, ...] = SPLITS,
    progress: bool = True,
    report_dir: str | Path | None = None,
) -> tuple[dict[str, list[str]], dict[str, list[CachedCase]]]:
    """Generate (synthetic), discover, split (unless `splits` is given, e.g. from a checkpoint) and cache.

    Returns the split (case ids; with data.on_error=skip, without the skipped cases) and the cached cases of
    the splits named in `only`. `report_dir` (the run dir) receives skipped_cases.json when cases are skipped.
    """
    data = typed(DataConfig, data_cfg, "data")
    prep = Preprocessing.from_data_cfg(data)
    found, problems = _discover(data, data.on_error, as_is=splits is not None)  # given splits: a checkpoint's data
    pairs = {p.case_id: p for p in found}
    if splits is None:
        if not pairs:
            raise LitsError(
                f"{data.root}: no usable cases (all {len(problems)} have problems, see the log); fix the files"
            )
        splits = make_splits(list(pairs), data, seed)
    else:
        unknown = [name for name in only if name not in splits]
        if unknown:
            raise LitsError(f"split {unknown[0]!r} is not in the given splits {sorted(splits)}; choose one of them")
        skipped = {p.case_id for p in problems}
        missing = [cid for name in only for cid in splits[name] if cid not in pairs and cid not in skipped]
        if missing:
            raise LitsError(
                f"{data.root}: cases {missing[:5]} of the split are missing; "
                f"point data.root at the data the model was trained on"
            )
    wanted = [pairs[cid] for name in only for cid in splits[name] if cid in pairs]
    if "train" in only:  # a training run scores its test split at the end (evaluate_after): read its headers now
        later = [pairs[cid] for name in splits if name not in only for cid in splits[name] if cid in pairs]
        problems += check_headers(later, data.on_error)
    cached, failed = cache_cases(
        wanted, data.cache_dir, prep, data.root, progress, _workers(data), data.on_error, data.lock_timeout_min
    )
    problems = sorted(problems + failed, key=lambda p: natural_key(p.case_id or ""))
    _report(problems, splits, report_dir)
    dropped = {p.case_id for p in problems}
    splits = {name: [cid for cid in ids if cid not in dropped] for name, ids in splits.items()}
    for case in cached.values():
        z_range = liver_z_range(case.stats["liver_voxels"], case.spacing[0], data.liver_margin_mm)
        case.meta["train_z_range"] = list(z_range)
    _warn_intensities(cached.values())
    selected = {name: [cached[cid] for cid in splits[name]] for name in only}
    check_labels(selected, data.root)
    return splits, selected


def check_headers(pairs: list, on_error: str) -> list[Problem]:
    """The NIfTI headers of cases that are not cached now (a training run's test split, scored after training): each
    image and label readable and a plausible 3D volume. on_error=fail: the first problem raises; skip: the problems."""
    problems = []
    for pair in pairs:
        for path in (pair.image, pair.label):
            if path is None:
                continue
            try:
                problem = header_problem(path, nib.load(str(path)).header)
            except Exception as exc:  # nibabel raises many types for unreadable files
                problem = f"{path}: cannot read NIfTI ({type(exc).__name__}); re-download or re-export the file"
            if problem and on_error == "fail":
                raise LitsError(f"{problem} (case {pair.case_id}, checked at start-up); or set data.on_error=skip")
            if problem:
                problems.append(Problem(pair.case_id, str(path), problem))
                break
    return problems


def _warn_intensities(cases) -> None:
    for case in cases:
        if case.meta.get("warning"):  # caches written before the intensity check have no such key
            log.warning("case %s: %s", case.case_id, case.meta["warning"])


def _voxels(cases: list[CachedCase], kind: str) -> int:
    return sum(int(c.stats[f"{kind}_voxels"].sum()) for c in cases)


def check_labels(cases: dict[str, list[CachedCase]], root) -> None:
    """A training set must hold liver and tumour voxels (else the run learns nothing and scores a meaningless
    "tumour Dice 1.0"); a validation set without tumour is allowed, with a warning."""
    train, val = cases.get("train"), cases.get("val")
    if train:
        for kind, name, labels in (("liver", "liver", "1 or 2"), ("tumor", "tumour", "2")):
            if not _voxels(train, kind):
                raise LitsError(
                    f"{root}: none of the {len(train)} training cases has a {name} voxel "
                    f"(label {labels}); the segmentations are empty or not LiTS labels (0 background, 1 liver, "
                    "2 tumour): check them, or choose a split whose training cases have tumours"
                )
    if val and not _voxels(val, "tumor"):
        log.warning(
            "none of the %d validation cases has a tumour voxel: tumour Dice on them is 1.0 for an empty prediction "
            "and tells nothing about tumours; choose validation cases with tumours (data.split.val)",
            len(val),
        )


def prepare_all(
    data_cfg, progress: bool = True, report_dir: str | Path | None = None
) -> tuple[dict[str, CachedCase], list[Problem]]:
    """Cache every discovered case (scripts/prepare_data.py): ({case_id: CachedCase}, problems)."""
    data = typed(DataConfig, data_cfg, "data")
    prep = Preprocessing.from_data_cfg(data)
    found, problems = _discover(data, data.on_error)
    cached, failed = cache_cases(
        found, data.cache_dir, prep, data.root, progress, _workers(data), data.on_error, data.lock_timeout_min
    )
    problems = sorted(problems + failed, key=lambda p: natural_key(p.case_id or ""))
    _report(problems, {}, report_dir)
    _warn_intensities(cached.values())
    return cached, problems


def cache_folder(data_cfg) -> Path:
    """Where this data config's cache lives: <data.cache_dir>/<key>."""
    data = typed(DataConfig, data_cfg, "data")
    return key_folder(data.cache_dir, Preprocessing.from_data_cfg(data), data.root)


def write_split(splits: dict[str, list[str]], path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(splits, indent=1))
