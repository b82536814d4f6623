"""Writing results people read and look at: tables, CSV/JSON (atomically), overlay pictures."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from skimage.segmentation import find_boundaries

# outline colours (RGB 0..1)
LIVER_COLOR = np.array([0.2, 0.9, 0.2])
TUMOR_COLOR = np.array([1.0, 0.2, 0.2])


def write_atomic(path: str | Path, text: str) -> Path:
    """Write text to a temp file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data) -> Path:
    return write_atomic(path, json.dumps(data, indent=2, default=float) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    buffer = io.StringIO()
    columns = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return write_atomic(path, buffer.getvalue())


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A markdown table (also readable in a terminal); floats with 4 decimals."""
    def cell(v):
        return f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v)

    body = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in body]
    return "\n".join(lines)


def overlay(image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(H, W) image in [0, 1] + label map {0,1,2} -> (H, W, 3) RGB with liver and tumour outlines."""
    rgb = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)
    rgb[find_boundaries(label >= 1, mode="inner")] = LIVER_COLOR
    rgb[find_boundaries(label == 2, mode="inner")] = TUMOR_COLOR
    return rgb


def comparison_grid(images: list[np.ndarray], truths: list[np.ndarray], predictions: list[np.ndarray]) -> np.ndarray:
    """Rows of [CT | ground truth outlines | prediction outlines], (H_total, W_total, 3) float in [0, 1].

    Slices are shown in radiological orientation (canonical RAS arrays flipped so anterior is up and the
    patient's right is on the left of the picture).
    """
    rows = []
    for image, truth, pred in zip(images, truths, predictions):
        gray = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=2).astype(np.float32)
        row = np.concatenate([gray, overlay(image, truth), overlay(image, pred)], axis=1)
        rows.append(row[::-1, ::-1])
    return np.concatenate(rows, axis=0)
