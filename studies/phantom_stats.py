"""The synthetic phantom's lesion statistics, measured the way the LiTS scorer sees lesions, next to LiTS's.

    python -m studies phantom                               # the default data set (40 cases, seed 0)
    python -m studies phantom --num-cases 200 --seed 1      # more cases, another seed
    python -m studies phantom --root /data/LiTS             # any LiTS-format folder, e.g. the real data
    python -m studies phantom --out docs/phantom_stats.md --montage docs/phantom_hard_cases.png

Without --root the cases are generated in memory exactly as `generate_case` makes them (same arrays), which also
gives what the generator drew (contrast phase, placements, necrosis, rims) besides what is measured.

What is measured, per case, from the volume and its labels only:
* lesions: `lits.evaluate.metrics.reference_lesions` on the tumour label (the scorer's definition: in-plane
  dilation by one voxel, 6-connected components), on (Z, Y, X) arrays as evaluate.py scores them;
* equivalent diameter of a lesion: (6 V / pi)^(1/3), V its voxel count times the voxel volume from the affine;
* density class: mean HU of the lesion minus the mean HU of the liver (label 1) within 3 voxels around it in-plane:
  hypodense below -10 HU, hyperdense above +10 HU, isodense in between (partial-volume blur and noise included);
* at the liver boundary: the lesion's voxels touch background (label 0) 6-connectedly;
* small lesions (under 10 mm): voxels per lesion, contrast (as above) and contrast-to-noise ratio |contrast| / the
  case's liver noise, the noise being the robust sd (1.4826 x median absolute deviation) of the liver's HU (label 1,
  two voxels or more from tumour): what a network has to find a small lesion with. Beside the phantom's column
  `SMALL_REAL` holds the same measurements on a real multi-focal LiTS volume (given --root, any folder's own).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from lits.core.errors import LitsError
from lits.evaluate.metrics import reference_lesions
from studies.phantom_montage import save_hardest

ISO_HU = 10.0  # |lesion - surrounding liver| below this: isodense
RING_VOXELS = 3  # in-plane width of the liver ring a lesion is compared with
BINS_MM = (10.0, 20.0)  # equivalent-diameter bins: < 10, 10-20, > 20 mm
# Lesions under 10 mm of one real multi-focal LiTS volume (70 lesions, median 5.9 mm, 84 % under 10 mm), measured as
# `small_lesions` measures them: what the phantom's small lesions are calibrated against (within +-25 %).
SMALL_REAL = {"voxels": 100.0, "contrast_hu": -47.0, "cnr": 3.1, "spacing_z_mm": 1.0, "noise_hu": 15.0}
SMALL_TOLERANCE = 0.25


@dataclass
class CaseStats:
    """One case's measured lesions (one entry per lesion in each list) and what the generator drew, if known."""

    case: str
    diameters_mm: list[float] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # hypodense / isodense / hyperdense / unknown (no liver ring)
    deltas_hu: list[float] = field(default_factory=list)  # lesion minus surrounding liver (nan without a ring)
    at_boundary: list[bool] = field(default_factory=list)
    slices: list[int] = field(default_factory=list)  # the slice (Z) with each lesion's largest cross-section
    z_ranges: list[tuple[int, int]] = field(default_factory=list)  # first and last slice + 1 of each lesion
    boundary_slices: list[int] = field(default_factory=list)  # the slice where each lesion touches background most
    voxels: list[int] = field(default_factory=list)  # label voxels of each lesion
    edge_shares: list[float] = field(default_factory=list)  # contrast of its edge voxels / of its core (nan: none)
    noise_hu: float = float("nan")  # robust sd of the liver's HU away from tumour
    spacing_z_mm: float = float("nan")
    liver_area: np.ndarray | None = None  # liver (+ tumour) voxels per slice (Z)
    drawn: object = None  # the generator's Phantom (phase, lesions), when generated here


def to_zyx(vol_xyz: np.ndarray, seg_xyz: np.ndarray, affine: np.ndarray):
    """NIfTI (X, Y, Z) arrays -> (Z, Y, X) as the scorer reads them, and the spacing (sz, sy, sx) in mm."""
    spacing = tuple(float(x) for x in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)[::-1])
    return np.asarray(vol_xyz).transpose(2, 1, 0), np.asarray(seg_xyz).transpose(2, 1, 0), spacing


def measure_case(case: str, vol_xyz: np.ndarray, seg_xyz: np.ndarray, affine: np.ndarray) -> CaseStats:
    """Every reference lesion of one case: equivalent diameter, density class, whether it touches the boundary."""
    vol, seg, spacing = to_zyx(vol_xyz, seg_xyz, affine)
    out = CaseStats(case, liver_area=(seg >= 1).sum(axis=(1, 2)), spacing_z_mm=spacing[0])
    out.noise_hu = liver_noise(vol, seg)
    labels, n = reference_lesions(seg == 2)
    if n == 0:
        return out
    voxel_mm3 = float(np.prod(spacing))
    plane = ndimage.generate_binary_structure(2, 1)[None]  # in-plane 4-neighbourhood
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, b.start - m), b.stop + m) for b, m in zip(box, (1, RING_VOXELS + 1, RING_VOXELS + 1)))
        lesion = labels[box] == k
        v = int(lesion.sum())
        out.voxels.append(v)
        out.diameters_mm.append(float((6.0 * v * voxel_mm3 / np.pi) ** (1.0 / 3.0)))
        ring = ndimage.binary_dilation(lesion, plane, iterations=RING_VOXELS) & ~lesion & (seg[box] == 1)
        delta = float(vol[box][lesion].mean()) - float(vol[box][ring].mean()) if ring.any() else float("nan")
        out.deltas_hu.append(delta)
        out.edge_shares.append(edge_share(vol[box], lesion, ring, plane))
        if np.isnan(delta):
            out.classes.append("unknown")
        else:
            out.classes.append("hypodense" if delta < -ISO_HU else "hyperdense" if delta > ISO_HU else "isodense")
        touching = ndimage.binary_dilation(lesion) & (seg[box] == 0)
        out.at_boundary.append(bool(touching.any()))
        out.boundary_slices.append(int(np.argmax(touching.sum(axis=(1, 2)))) + box[0].start)
        area = lesion.sum(axis=(1, 2))
        out.slices.append(int(np.argmax(area)) + box[0].start)
        z = np.nonzero(area)[0] + box[0].start
        out.z_ranges.append((int(z[0]), int(z[-1]) + 1))
    return out


def edge_share(vol: np.ndarray, lesion: np.ndarray, ring: np.ndarray, plane: np.ndarray) -> float:
    """Contrast (against the liver `ring`) of a lesion's edge voxels, those with an in-plane neighbour outside it,
    as a share of its core's (the rest): about 0.5-0.7 for a margin centred on the label's edge once blurred, less
    where the label takes in a fading margin; nan without a ring or a core."""
    core = ndimage.binary_erosion(lesion, plane, border_value=1)
    edge = lesion & ~core
    if not (ring.any() and core.any() and edge.any()):
        return float("nan")
    liver = float(vol[ring].mean())
    core_delta = float(vol[core].mean()) - liver
    return (float(vol[edge].mean()) - liver) / core_delta if abs(core_delta) > ISO_HU else float("nan")


def liver_noise(vol: np.ndarray, seg: np.ndarray) -> float:
    """Robust sd (1.4826 x MAD) of the liver's HU (label 1) two voxels or more from tumour; nan without liver."""
    liver = seg == 1
    if (seg == 2).any():
        liver &= ~ndimage.binary_dilation(seg == 2, iterations=2)
    values = vol[liver].astype(np.float64)
    if values.size < 100:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def small_lesions(cases: list[CaseStats]) -> dict:
    """Medians over the lesions under BINS_MM[0] of: voxels, contrast (HU), contrast-to-noise ratio; the share with
    CNR < 1 (invisible to the eye); the median slice spacing and liver noise over cases."""
    rows = [
        (v, delta, abs(delta) / c.noise_hu, edge)
        for c in cases
        for v, d, delta, edge in zip(c.voxels, c.diameters_mm, c.deltas_hu, c.edge_shares)
        if d < BINS_MM[0] and np.isfinite(delta) and c.noise_hu > 0
    ]
    v, delta, cnr, edge = (np.array(x, dtype=float) for x in zip(*rows)) if rows else (np.array([np.nan]),) * 4
    return {
        "lesions": len(rows),
        "voxels": float(np.median(v)),
        "contrast_hu": float(np.median(delta)),
        "cnr": float(np.median(cnr)),
        "edge_share": float(np.nanmedian(edge)) if np.isfinite(edge).any() else float("nan"),
        "invisible": float(np.mean(cnr < 1.0)) if rows else float("nan"),
        "spacing_z_mm": float(np.median([c.spacing_z_mm for c in cases])),
        "noise_hu": float(np.nanmedian([c.noise_hu for c in cases])),
    }


def small_table(measured: dict, source: str, real: dict | None = None) -> str:
    """The small-lesion figures of `measured` beside the real CT's (SMALL_REAL), each marked within +-25 % or not."""
    real = SMALL_REAL if real is None else real
    names = {
        "voxels": "voxels per small lesion (median)",
        "contrast_hu": "contrast to surrounding liver, HU (median)",
        "cnr": "contrast-to-noise ratio (median)",
        "spacing_z_mm": "slice spacing, mm (median over cases)",
        "noise_hu": "liver noise sd, HU (median over cases)",
    }
    lines = [
        f"| lesions under 10 mm ({measured['lesions']} here) | {source} | real CT | within 25 % |",
        "|---|---|---|---|",
    ]
    for key, name in names.items():
        ok = abs(measured[key] - real[key]) <= SMALL_TOLERANCE * abs(real[key])
        lines.append(f"| {name} | {measured[key]:.3g} | {real[key]:.3g} | {'yes' if ok else 'no'} |")
    lines.append(f"| share with CNR < 1 (invisible) | {_pct(measured['invisible'])} | | |")
    edge_real = f"{real['edge_share']:.2g}" if "edge_share" in real else "not measured"
    lines.append(f"| edge voxels' contrast / core's (median) | {measured['edge_share']:.2g} | {edge_real} | |")
    return "\n".join(lines) + "\n"


def generated_cases(num_cases: int, seed: int, params):
    """(case id, volume, segmentation, affine, phantom) for cases 0..num_cases-1, as `generate_case` makes them."""
    from lits.data.synthetic.anatomy import Phantom

    for i in range(num_cases):
        phantom = Phantom(np.random.default_rng([int(seed), int(i)]), params)
        vol, seg, aff = phantom.build()
        yield str(i), vol, seg, aff, phantom


def folder_pairs(root: Path) -> dict:
    """case id -> (volume path, segmentation path) of every labelled case of a LiTS-format folder, in case order."""
    from lits.data.sources import find_lits, natural_key

    cases, _ = find_lits(root)  # raises on a folder without LiTS volumes; unlabelled volumes are left out
    return {c.case_id: (c.image, c.label) for c in sorted(cases, key=lambda c: natural_key(c.case_id))}


def read_case(paths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(volume, segmentation, affine) of one case's files, arrays in file order (X, Y, Z)."""
    import nibabel as nib

    img, lab = nib.load(str(paths[0])), nib.load(str(paths[1]))
    return np.asarray(img.dataobj), np.asarray(lab.dataobj), lab.affine


def folder_cases(root: Path):
    """(case id, volume, segmentation, affine, None) for every labelled case of a LiTS-format folder."""
    for case, paths in folder_pairs(root).items():
        yield (case, *read_case(paths), None)


# ------------------------------------------------------------------------------------------------ the table
PUBLISHED = {
    "cases": "131 training + 70 test volumes",
    "tumour_free": "10% (13 of the 131 training volumes)",
    "per_case": "0 to 75 (range); median and quartiles not reported (assumed: median 3)",
    "per_bearing": "not reported",
    "diameter": "from a few mm to masses > 10 cm",
    "bins": "not reported (assumed: about half < 10 mm)",
    "classes": "hypo- and hyperdense lesions; shares not reported (assumed: mostly hypodense)",
    "boundary": "present; share not reported",
}


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def summarise(cases: list[CaseStats]) -> dict:
    """Aggregates over cases: lesion counts, diameter bins, density classes, boundary share, and what was drawn."""
    counts = np.array([len(c.diameters_mm) for c in cases])
    bearing = counts[counts > 0] if (counts > 0).any() else np.array([0])
    diam = np.array([d for c in cases for d in c.diameters_mm])
    classes = [k for c in cases for k in c.classes if k != "unknown"]
    out = {
        "cases": len(cases),
        "tumour_free": float(np.mean(counts == 0)),
        "per_case": (float(np.median(counts)), *np.percentile(counts, [25, 75]).tolist(), int(counts.max())),
        "per_bearing": (float(np.median(bearing)), *np.percentile(bearing, [25, 75]).tolist()),
        "bearing_20": float(np.mean(bearing >= 20)),
        "lesions": int(counts.sum()),
        "diameter": (float(np.median(diam)), float(diam.min()), float(diam.max())) if len(diam) else (0, 0, 0),
        "bins": [float(np.mean(diam < BINS_MM[0])), float(np.mean((diam >= BINS_MM[0]) & (diam <= BINS_MM[1])))]
        if len(diam)
        else [0.0, 0.0],
        "classes": {k: classes.count(k) / max(1, len(classes)) for k in ("hypodense", "isodense", "hyperdense")},
        "boundary": float(np.mean([b for c in cases for b in c.at_boundary])) if len(diam) else 0.0,
    }
    out["bins"].append(1.0 - sum(out["bins"]) if len(diam) else 0.0)
    drawn = [c.drawn for c in cases if c.drawn is not None]
    if drawn:
        lesions = [les for ph in drawn for les in ph.lesions]
        n = max(1, len(lesions))
        out["drawn"] = {
            "phases": {name: sum(ph.phase.name == name for ph in drawn) / len(drawn) for name in _phases()},
            "placements": {k: sum(les.placement == k for les in lesions) / n for k in ("boundary", "vessel")},
            "exophytic": sum(les.exophytic for les in lesions) / n,
            "necrotic": sum(les.necrotic for les in lesions) / n,
            "rim": sum(les.rim for les in lesions) / n,
            "lesions": len(lesions),
        }
    return out


def _phases() -> tuple[str, ...]:
    from lits.data.synthetic.phases import PHASES

    return PHASES


def table(s: dict, source: str) -> str:
    """The summary as a markdown table, the phantom's numbers next to LiTS's."""
    med, q1, q3, mx = s["per_case"]
    bmed, bq1, bq3 = s["per_bearing"]
    d_med, d_min, d_max = s["diameter"]
    c = s["classes"]
    rows = [
        ("cases", str(s["cases"]), PUBLISHED["cases"]),
        ("tumour-free cases", _pct(s["tumour_free"]), PUBLISHED["tumour_free"]),
        ("lesions per case: median [quartiles], max", f"{med:g} [{q1:g}, {q3:g}], {mx}", PUBLISHED["per_case"]),
        (
            "lesions per tumour-bearing case: median [quartiles]; share with >= 20",
            f"{bmed:g} [{bq1:g}, {bq3:g}]; {_pct(s['bearing_20'])}",
            PUBLISHED["per_bearing"],
        ),
        ("lesions in all", str(s["lesions"]), "not used"),
        (
            "equivalent diameter: median (min - max)",
            f"{d_med:.1f} mm ({d_min:.1f} - {d_max:.0f} mm)",
            PUBLISHED["diameter"],
        ),
        ("lesions < 10 / 10-20 / > 20 mm", " / ".join(_pct(x) for x in s["bins"]), PUBLISHED["bins"]),
        (
            "density vs surrounding liver: hypo / iso (within 10 HU) / hyper",
            " / ".join(_pct(c[k]) for k in ("hypodense", "isodense", "hyperdense")),
            PUBLISHED["classes"],
        ),
        ("lesions touching the liver boundary", _pct(s["boundary"]), PUBLISHED["boundary"]),
    ]
    lines = [f"| statistic | {source} | LiTS |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if "drawn" in s:
        d = s["drawn"]
        phases = " / ".join(f"{k.replace('_', '-')} {_pct(v)}" for k, v in d["phases"].items())
        lines += [
            "",
            f"As drawn by the generator ({d['lesions']} lesions): contrast phase {phases}; lesions placed at the "
            f"liver surface {_pct(d['placements']['boundary'])} (bulging out of it {_pct(d['exophytic'])}), against a "
            f"vein {_pct(d['placements']['vessel'])}; necrotic core {_pct(d['necrotic'])}, enhancing rim "
            f"{_pct(d['rim'])}.",
        ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ main
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=None, help="measure this LiTS-format folder instead of generating")
    p.add_argument("--num-cases", type=int, default=None, help="cases to generate (default: data.synthetic's 40)")
    p.add_argument("--seed", type=int, default=0, help="data set seed (default 0)")
    p.add_argument("--size", type=int, default=None, help="in-plane voxels (default: the generator's 256)")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    p.add_argument("--montage", type=Path, default=None, help="also write a PNG of the hardest slices")


def main(args) -> int:
    try:
        from lits.core.config.synthetic import SyntheticConfig

        if args.root is not None:
            source, rows = f"{args.root.name} (measured)", folder_cases(args.root)
        else:
            synth = SyntheticConfig(**({"size": args.size} if args.size else {}))
            num_cases = args.num_cases or synth.num_cases
            source = f"phantom, {num_cases} cases, seed {args.seed} (measured)"
            rows = generated_cases(num_cases, args.seed, synth.params)
        cases = []
        for case, vol, seg, aff, phantom in rows:
            cases.append(measure_case(case, vol, seg, aff))
            cases[-1].drawn = phantom
        text = table(summarise(cases), source) + "\n" + small_table(small_lesions(cases), source)
        print(text)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
        if args.montage is not None:
            load = _loader(args, synth if args.root is None else None)
            path = save_hardest(cases, BINS_MM[0], load, args.montage)
            print(f"wrote {path}")
    except LitsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _loader(args, synth):
    """case id -> (volume, segmentation) in (X, Y, Z): regenerated, or read from --root."""
    if synth is not None:
        from lits.data.synthetic import generate_case

        return lambda case: generate_case(int(case), args.seed, synth.params)[:2]
    pairs = folder_pairs(args.root)
    return lambda case: read_case(pairs[case])[:2]
