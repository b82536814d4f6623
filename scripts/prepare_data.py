"""Preprocess a data set into the cache ahead of training (train/evaluate also do it lazily, for what they need).

    python scripts/prepare_data.py data=lits data.root=/data/LiTS [data.prepare_workers=8] [data.window=[-200,250]]
    python scripts/prepare_data.py data=msd data.root=/data/Task03_Liver data.on_error=skip
    python scripts/prepare_data.py debug=smoke                 # any train.py overrides; only data.* matters

Every discovered case is validated, reoriented to RAS, windowed and written to <data.cache_dir>/<key>/<case>/
by data.prepare_workers processes, with a progress bar. Each case is written to a temporary folder and renamed
into place, so the script can be killed at any time: a rerun continues with the cases still missing.
With data.on_error=skip, unusable cases are listed in <data.cache_dir>/<key>/skipped_cases.json.
Prints the cache folder, the case and slice counts and the split the given seed (and data.split/fold) yields.
"""

from __future__ import annotations

import logging
import sys
import time


def run(cfg) -> dict:
    import numpy as np

    from lits.core.config import TrainConfig, typed
    from lits.data.prepare import cache_folder, prepare_all
    from lits.data.preprocess import liver_z_range
    from lits.data.splits import make_splits

    cfg = typed(TrainConfig, cfg)
    data = cfg.data
    folder = cache_folder(data)
    started = time.time()
    cached, problems = prepare_all(data, progress=True, report_dir=folder)
    elapsed = time.time() - started
    if not cached:
        from lits.core.errors import LitsError

        raise LitsError(f"{data.root}: no usable cases; see the reasons above")
    slices = sum(len(c.stats["liver_voxels"]) for c in cached.values())
    margin = data.liver_margin_mm
    train_slices = sum(
        np.subtract(*liver_z_range(c.stats["liver_voxels"], c.spacing[0], margin)[::-1]) for c in cached.values()
    )
    tumor_free = sum(int(c.stats["tumor_voxels"].sum() == 0) for c in cached.values())
    size = sum(f.stat().st_size for c in cached.values() for f in c.folder.iterdir())
    splits = make_splits(sorted(cached), data, cfg.seed)
    print(f"cache: {folder}")
    print(
        f"{len(cached)} cases ({tumor_free} without tumour), {slices} slices, {train_slices} training slices "
        f"(liver z-range + {margin} mm), {_human(size)}, {elapsed:.1f} s"
    )
    print(
        "split (seed {}{}): ".format(cfg.seed, f", fold {data.fold}/{data.num_folds}" if data.fold is not None else "")
        + ", ".join(f"{name} {len(ids)}" for name, ids in splits.items())
    )
    if problems:
        print(f"skipped {len(problems)} case(s): see {folder / 'skipped_cases.json'}")
    return {"cases": len(cached), "skipped": len(problems), "folder": str(folder)}


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lits.core.cli import one_line, run_task
    from lits.core.compose import compose_raw

    try:
        cfg = compose_raw("train", argv)  # typed by run_task, as train.py's config is
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    run_task(run, cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
