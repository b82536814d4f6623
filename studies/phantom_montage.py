"""The phantom's hardest sights as one picture (`python -m studies phantom --montage PNG`): the slice with the most
lesions, an isodense lesion, a lesion at the liver boundary, and the most small lesions in one slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def hardest_slices(cases: list, small_mm: float) -> list[tuple[str, int, str]]:
    """(case, slice, caption) of up to four hard sights: the slice with the most lesions, the isodense lesion of
    8-30 mm closest to the liver's density, a mid-sized lesion at the liver boundary and the slice with the most
    lesions under 10 mm in yet another case."""
    picks: list[tuple[str, int, str]] = []

    def per_slice(c, small_only: bool = False) -> tuple[int, int]:
        nz = max((z1 for _, z1 in c.z_ranges), default=0)
        counts = np.zeros(nz + 1, dtype=int)
        for (z0, z1), d in zip(c.z_ranges, c.diameters_mm):
            if not small_only or d < small_mm:
                counts[z0:z1] += 1
        return int(counts.argmax()), int(counts.max())

    busiest = max(cases, key=lambda c: per_slice(c)[1])
    k, n = per_slice(busiest)
    if n:
        picks.append((busiest.case, k, f"case {busiest.case}, slice {k}: {n} lesions in this slice"))
    iso = [(d, c, i) for c in cases for i, (d, k2) in enumerate(zip(c.diameters_mm, c.classes)) if k2 == "isodense"]
    iso = [t for t in iso if 8.0 <= t[0] <= 30.0] or iso  # one you could miss, not a mass whose texture averages out
    wide = [t for t in iso if t[1].liver_area[t[1].slices[t[2]]] >= 0.5 * t[1].liver_area.max()]
    iso = wide or iso  # in a slice through the body of the liver, not its tip
    if iso:
        d, c, i = min(iso, key=lambda t: abs(t[1].deltas_hu[t[2]]))
        picks.append((c.case, c.slices[i], f"case {c.case}, slice {c.slices[i]}: isodense lesion, {d:.0f} mm"))
    edge = [(d, c.case, c.boundary_slices[i]) for c in cases for i, d in enumerate(c.diameters_mm) if c.at_boundary[i]]
    edge.sort()
    edge = [e for e in edge if 8.0 <= e[0] <= 40.0] or edge
    if edge:
        d, case, k = edge[len(edge) // 2]
        picks.append((case, k, f"case {case}, slice {k}: lesion at the liver boundary, {d:.0f} mm"))
    others = [c for c in cases if c.case not in {p[0] for p in picks}]
    if others:
        small = max(others, key=lambda c: per_slice(c, True)[1])
        k, n = per_slice(small, True)
        if n:
            picks.append((small.case, k, f"case {small.case}, slice {k}: {n} lesions < {small_mm:g} mm in this slice"))
    return picks


def liver_crop(seg_slice: np.ndarray, margin: int = 12) -> tuple[slice, slice]:
    """The in-plane box of the liver in one (X, Y) slice, with a margin (the whole slice if it has no liver)."""
    idx = np.argwhere(seg_slice >= 1)
    if not len(idx):
        return slice(None), slice(None)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = idx.max(axis=0) + margin + 1
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def save_hardest(cases: list, small_mm: float, load, path: Path) -> Path:
    """The montage of `hardest_slices`; ``load(case)`` returns that case's (volume, segmentation) in (X, Y, Z)."""
    from lits.data.synthetic.montage import save_panels

    panels = []
    for case, k, caption in hardest_slices(cases, small_mm):
        vol, seg = load(case)
        box = liver_crop(seg[:, :, k])
        panels.append((vol[:, :, k][box], seg[:, :, k][box], caption))
    return save_panels(panels, path, title="synthetic phantom, hard cases (window [-160, 240] HU); below: labels")
