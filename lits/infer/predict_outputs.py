"""What predict.py writes into output=, and how a rerun continues an interrupted run there.

Beside the label maps: predictions.csv (one row per finished CT, rewritten after each one, so an interrupted run
leaves the rows of what it finished) and RUN_RECORD, what made them: the model (the sha256 of the checkpoint file,
or of the model folder's inference.json, which holds model.onnx's) and every setting that changes a label map. A
rerun with the same record skips the CTs whose outputs are listed as finished and predicts the rest; any other run
may replace files there only with overwrite=true. Label maps are written atomically, so a listed one is complete.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from lits.core.errors import LitsError
from lits.core.files import sha256_of
from lits.infer.export import probability_name

CSV_NAME = "predictions.csv"  # input, output (absolute paths), liver and tumour ml, lesions per CT
RUN_RECORD = ".lits-predict.json"  # the model and settings the label maps in this folder were made with
CSV_COLUMNS = ("input", "output", "liver_ml", "tumor_ml", "lesions")


def run_record(cfg, model_file: Path) -> dict:
    """The record of a predict run: its model's identity and the settings that change its outputs."""
    return {
        "model": str(model_file.resolve()),
        "sha256": sha256_of(model_file),
        "postprocess": {k: v for k, v in dataclasses.asdict(cfg.postprocess).items() if v is not None},
        "tta": cfg.tta,
        "naming": cfg.naming,
        "save_probabilities": cfg.save_probabilities,
    }


def csv_row(input_path: Path, output_path: Path, liver_ml: float, tumor_ml: float, lesions: int) -> dict:
    """A predictions.csv row: absolute paths, volumes to 0.01 ml."""
    return {"input": str(input_path.resolve()), "output": str(output_path.resolve()), "liver_ml": round(liver_ml, 2),
            "tumor_ml": round(tumor_ml, 2), "lesions": int(lesions)}  # fmt: skip


def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [
            {
                **row,
                "liver_ml": float(row["liver_ml"]),
                "tumor_ml": float(row["tumor_ml"]),
                "lesions": int(row["lesions"]),
            }  # fmt: skip
            for row in csv.DictReader(f)
        ]


def finished_rows(out_dir: Path, record: dict, save_probabilities: bool) -> dict[str, dict] | None:
    """{label-map name: its csv row} of what an earlier run with the same record finished in out_dir; None when
    out_dir holds no run of this record (then its files are not this run's to skip or replace)."""
    try:
        previous = json.loads((out_dir / RUN_RECORD).read_text())
        rows = _read_rows(out_dir / CSV_NAME) if (out_dir / CSV_NAME).is_file() else []
    except (OSError, ValueError, KeyError):
        return None
    if previous != record:
        return None
    finished = {}
    for row in rows:
        name = Path(row["output"]).name
        if (out_dir / name).is_file() and (not save_probabilities or (out_dir / probability_name(name)).is_file()):
            finished[name] = row
    return finished


def check_overwrite(out_dir: Path, names: list[str], probabilities: bool, overwrite: bool, same_run: bool) -> None:
    """Refuse (before anything is predicted or created) to replace files in out_dir unless overwrite=true or they
    are an earlier run's of the same record (`same_run`: it is continued)."""
    if same_run or overwrite:
        return
    targets = [out_dir / n for n in names]
    targets += [out_dir / probability_name(n) for n in names] if probabilities else []
    targets.append(out_dir / CSV_NAME)
    existing = [t for t in targets if t.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more of the files this run writes)" if len(existing) > 1 else ""
        raise LitsError(
            f"{existing[0]}: already exists{more}, made with another model or settings; pass overwrite=true to "
            "replace, or choose another output=DIR"
        )
