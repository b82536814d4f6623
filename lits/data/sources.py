"""Where the cases are: the `data.layout` readers (LiTS folders, MSD Task03_Liver, a CSV list of pairs).

Each finder returns `(cases, problems)`. A problem is one case that cannot be used (a volume without its
segmentation, a segmentation without its volume, a CSV row naming a missing file), with a one-line reason
that names the file and the fix; `prepare` raises the first one (`data.on_error=fail`) or reports them all
and leaves those cases out (`data.on_error=skip`). Problems that leave nothing usable (no such folder, no
cases at all, two copies of one case) raise a `LitsError` at once.

Case ids are the numbers in the file names in every layout (`volume-7.nii` and `liver_7.nii.gz` are both
case "7"), so split files carry over between the LiTS and MSD distributions of the same data.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from lits.core.errors import LitsError
from lits.data.nifti import CasePaths

LAYOUTS = ("lits", "msd", "csv")
_LITS = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$", re.IGNORECASE)
_NIFTI = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)
_NUMBERED = re.compile(r"^[A-Za-z]+[-_](\d+)$")  # liver_12, volume-12, case_007 -> the number
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Problem:
    """A case left out (on_error=skip) or the error raised (on_error=fail)."""

    case_id: str | None
    path: str
    reason: str  # one line: the file and the fix

    def as_dict(self) -> dict:
        return {"case": self.case_id, "path": self.path, "reason": self.reason}


def natural_key(case_id: str):
    return (0, int(case_id), "") if case_id.isdigit() else (1, 0, case_id)


def id_from_filename(name: str) -> str:
    """`liver_12.nii.gz` -> "12", `volume-3.nii` -> "3", `ct_a.nii` -> "ct_a"."""
    match = _NIFTI.match(name)
    stem = match.group("stem") if match else name
    numbered = _NUMBERED.match(stem)
    if numbered:
        return str(int(numbered.group(1)))
    return stem


def _visible_niftis(folder: Path, recursive: bool) -> list[Path]:
    """NIfTI files, skipping hidden ones (MSD archives ship `._liver_0.nii.gz` macOS resource forks)."""
    found = folder.rglob("*.nii*") if recursive else folder.glob("*.nii*")
    return sorted(
        p
        for p in found
        if p.is_file()
        and not p.name.startswith(".")
        and _NIFTI.match(p.name)
        and not any(part.startswith(".") for part in p.relative_to(folder).parts[:-1])
    )


def find_lits(root: str | Path) -> tuple[list[CasePaths], list[Problem]]:
    """`volume-N.nii[.gz]` anywhere under root; its `segmentation-N` beside it, else the one elsewhere under root."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LitsError(
            f"{root}: data folder not found; set data.root=DIR to a folder of LiTS volume-N/segmentation-N NIfTI pairs"
        )
    volumes: dict[str, Path] = {}
    segmentations: dict[str, list[Path]] = {}
    for path in _visible_niftis(root, recursive=True):
        match = _LITS.match(path.name)
        if not match:
            continue
        kind, case_id = match.group(1).lower(), str(int(match.group(2)))
        if kind == "volume":
            if case_id in volumes:
                raise LitsError(f"{path}: case {case_id} also found at {volumes[case_id]}; keep one copy under {root}")
            volumes[case_id] = path
        else:
            segmentations.setdefault(case_id, []).append(path)
    if not volumes:
        hint = " (this looks like MSD Task03_Liver: use data=msd)" if any(root.rglob("imagesTr")) else ""
        raise LitsError(f"{root}: no volume-N.nii[.gz] files found{hint}; point data.root at a LiTS-layout folder")
    cases, problems = [], []
    for case_id, image in volumes.items():
        candidates = segmentations.get(case_id) or []
        beside = [p for p in candidates if p.parent == image.parent]
        if len(beside) > 1 or (not beside and len(candidates) > 1):
            twins = beside if len(beside) > 1 else candidates
            raise LitsError(f"{twins[1]}: case {case_id} also has segmentation {twins[0]}; keep one copy under {root}")
        label = (beside or candidates or [None])[0]
        if label is None:
            problems.append(
                Problem(
                    case_id,
                    str(image),
                    f"{image}: no segmentation-{case_id}.nii[.gz] beside it; add the label file or remove the volume",
                )
            )
            continue
        cases.append(CasePaths(case_id, image, label))
    for case_id, labels in segmentations.items():
        if case_id not in volumes:
            problems.append(
                Problem(
                    case_id,
                    str(labels[0]),
                    f"{labels[0]}: no volume-{case_id}.nii[.gz] for this segmentation; add the volume or remove the "
                    "file",
                )
            )
    return sorted(cases, key=lambda c: natural_key(c.case_id)), sorted(
        problems, key=lambda p: natural_key(p.case_id or "")
    )


def _msd_images_dir(root: Path) -> Path:
    if (root / "imagesTr").is_dir():
        return root / "imagesTr"
    if root.name == "imagesTr":
        return root
    below = sorted(p for p in root.glob("*/imagesTr") if p.is_dir())
    if len(below) == 1:
        return below[0]
    if len(below) > 1:
        raise LitsError(
            f"{root}: several MSD tasks found ({', '.join(str(p.parent.name) for p in below)}); set data.root to one "
            "of them"
        )
    raise LitsError(
        f"{root}: no imagesTr/ folder; point data.root at the MSD Task03_Liver folder (imagesTr/, labelsTr/)"
    )


def find_msd(root: str | Path) -> tuple[list[CasePaths], list[Problem]]:
    """Medical Segmentation Decathlon layout: `imagesTr/liver_N.nii.gz` with `labelsTr/liver_N.nii.gz` (same name)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise LitsError(f"{root}: data folder not found; set data.root=DIR to the MSD Task03_Liver folder")
    images_dir = _msd_images_dir(root)
    labels_dir = images_dir.parent / "labelsTr"
    images = _visible_niftis(images_dir, recursive=False)
    if not images:
        raise LitsError(f"{images_dir}: no .nii/.nii.gz images; point data.root at the MSD Task03_Liver folder")
    labels = {p.name: p for p in _visible_niftis(labels_dir, recursive=False)} if labels_dir.is_dir() else {}
    seen: dict[str, Path] = {}
    cases, problems = [], []
    for image in images:
        case_id = id_from_filename(image.name)
        if case_id in seen:
            raise LitsError(f"{image}: case {case_id} also found at {seen[case_id]}; keep one copy in {images_dir}")
        seen[case_id] = image
        label = labels.pop(image.name, None)
        if label is None:
            problems.append(
                Problem(
                    case_id,
                    str(image),
                    f"{image}: no {labels_dir / image.name}; add the label file or remove the image",
                )
            )
            continue
        cases.append(CasePaths(case_id, image, label))
    for name, label in labels.items():
        problems.append(
            Problem(
                id_from_filename(name),
                str(label),
                f"{label}: no {images_dir / name} for this label; add the image or remove the file",
            )
        )
    return sorted(cases, key=lambda c: natural_key(c.case_id)), problems


def read_pairs_csv(path: str | Path) -> tuple[list[CasePaths], list[Problem]]:
    """A CSV with a header `image,label` (optional `case_id`); relative paths are relative to the CSV's folder."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LitsError(f"{path}: CSV list not found; set data.root=FILE.csv (columns image,label[,case_id])")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(line for line in f if line.strip() and not line.lstrip().startswith("#")))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LitsError(
            f"{path}: cannot read the CSV ({exc}); write a UTF-8 CSV with columns image,label[,case_id]"
        ) from None
    columns = {k.strip().lower() for k in (rows[0].keys() if rows else []) if k}
    if not {"image", "label"} <= columns:
        raise LitsError(
            f"{path}: needs a header line with columns image,label (optional case_id), found "
            f"{sorted(columns) or 'no rows'}"
        )
    base = path.parent
    seen: dict[str, int] = {}
    cases, problems = [], []
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not row.get("image"):
            raise LitsError(f"{path}: line {line} has no image path; fill it in or delete the line")
        image = (base / row["image"]).expanduser()
        case_id = row.get("case_id") or row.get("case") or id_from_filename(image.name)
        if not _SAFE_ID.match(case_id):
            raise LitsError(
                f"{path}: line {line}: case id {case_id!r} must be letters, digits, '.', '_' or '-'; fix the case_id "
                "column"
            )
        if case_id in seen:
            raise LitsError(
                f"{path}: line {line}: case id {case_id} already used on line {seen[case_id]}; give each row its own "
                "case_id"
            )
        seen[case_id] = line
        label = (base / row["label"]).expanduser() if row.get("label") else None
        if not image.is_file():
            problems.append(
                Problem(
                    case_id,
                    str(image),
                    f"{image}: image file not found (listed in {path} line {line}); fix the path or remove the line",
                )
            )
        elif label is None:
            problems.append(
                Problem(
                    case_id,
                    str(image),
                    f"{path}: line {line} ({image.name}) has no label path; add the segmentation or remove the line",
                )
            )
        elif not label.is_file():
            problems.append(
                Problem(
                    case_id,
                    str(label),
                    f"{label}: label file not found (listed in {path} line {line}); fix the path or remove the line",
                )
            )
        else:
            cases.append(CasePaths(case_id, image, label))
    if not cases and not problems:
        raise LitsError(f"{path}: no rows; list one image,label pair per line")
    return cases, problems


def discover(data_cfg) -> tuple[list[CasePaths], list[Problem]]:
    """The cases of `data.root` in the `data.layout` format, and the per-case problems found on the way."""
    layout = data_cfg.layout
    finders = {"lits": find_lits, "msd": find_msd, "csv": read_pairs_csv}
    if layout not in finders:
        raise LitsError(
            f"data.layout={layout}: unknown layout; choose one of {', '.join(LAYOUTS)} (or data=lits / data=msd / "
            "data=csv)"
        )
    return finders[layout](data_cfg.root)
