"""Liver lesions drawn with the LiTS data set's statistics: how many per case, how big, how dense, what texture, where.

Source: Bilic et al., "The Liver Tumor Segmentation Benchmark (LiTS)", Medical Image Analysis 84 (2023) 102680
(arXiv 1901.04056): 131 training and 70 test contrast-enhanced abdominal CT volumes from seven centres, primary
and secondary liver tumours of varied sizes and appearances, hypo- and hyperdense against the liver, 0 to 75
lesions per volume. The paper gives ranges and examples, not the quantiles drawn here: a number that is not a
reported one is marked "assumed", with the reason. `python -m studies phantom` measures generated data with the
scorer's lesion definition (`lits.evaluate.metrics.reference_lesions`) and prints it next to these targets; given
a LiTS folder it prints the same table for the real data, which is how the assumed numbers can be checked.

What LiTS shows -> what is drawn here (defaults in `SyntheticParams`):

* Tumour-free cases. 13 of the 131 training volumes carry no tumour label (10%).
  -> ``tumor_free_fraction`` 0.10.
* Lesions per case. 0 to 75, heavy-tailed: most volumes hold one or a few lesions, a few hold dozens of
  metastases. Median and quartiles not reported (assumed: median about 3).
  -> 1 + negative binomial (mean ``lesion_count_mean`` 6, shape ``lesion_count_shape`` 0.45, at most
  ``max_tumors`` 75): median 3, quartiles 1-9, about 9% of tumour-bearing cases with 20 or more.
* Lesion size. From a few mm (tens of mm^3) to masses over 10 cm. Shares per size bin not reported (assumed:
  about half of all lesions under 10 mm equivalent diameter, since metastases dominate the count and most are
  small; the few large masses dominate the tumour volume).
  -> in ``dominant_lesion_fraction`` 75% of tumour-bearing cases the first lesion is a mass, lognormal with
  median ``dominant_diameter_mm`` 65 mm (sigma 0.45); every other lesion lognormal with median
  ``lesion_diameter_mm`` 10.5 mm (sigma 0.7); clipped to ``tumor_diameter_range_mm`` 4-120 mm. (The masses keep the
  tumour burden of the previous phantom, about 0.5% of a tumour-bearing volume, so that the default task keeps
  enough tumour voxels to learn from.)
* Density. Hypo- and hyperdense lesions at various lesion-to-liver contrasts. Shares not reported (assumed: mostly
  hypodense, as metastases are in the portal-venous phase; about one in ten isodense, one in ten hyperdense).
  -> ``contrast_fractions`` 86 / 6 / 8%: hypodense 40-100 HU below the liver (``hypodense_hu``), isodense
  within 3-10 HU of it (``isodense_hu``; only lesions under 30 mm, larger ones are drawn hypodense instead),
  hyperdense 15-50 HU above it (``hyperdense_hu``); the case's contrast
  phase shifts these (phases.py: more hyperdense lesions in the arterial phase, less contrast in the delayed).
* Texture. Heterogeneous lesions, necrotic centres, rim enhancement, sharp and ill-defined margins (assumed
  shares). -> every lesion textured by a smooth random field (15-50% of its contrast + 2-6 HU); a necrotic,
  fluid-like core (5-30 HU) in ``necrosis_probability`` 50% of lesions of ``necrosis_min_diameter_mm`` 20 mm or
  more; an enhancing rim in ``rim_probability`` 25% of hypodense lesions; margins from sharp to ill-defined.
* Placement. Lesions under the liver capsule and against vessels (assumed shares). -> ``boundary_fraction`` 25%
  centred at the liver surface (half of them bulge out of the contour: those voxels become liver and lesion,
  as LiTS labels tumour as part of the liver), ``perivascular_fraction`` 20% against a portal or hepatic vein
  (the vein keeps its voxels, the lesion wraps round it); the rest inside the parenchyma. Lesions keep two
  voxels of liver between them when there is room, so that the scorer counts them apart.

Calibration (generator version 3): small lesions are calibrated against the lesions under 10 mm of a real
multi-focal LiTS volume, measured by `python -m studies phantom` (voxels per lesion ~100, contrast -47 HU,
contrast-to-noise ratio 3.1), which the size, density and noise settings above meet within 25 % (docs/small_lesions.md).

A dominant mass is sized in the phantom's anatomical mm (for a 360 mm field of view, scaled with the FOV like the
rest of the anatomy, since it is sized against the liver); every other lesion in the scanner's mm at the default
size (scaled by size / 256 otherwise), like the real lesions whose statistics it follows; never below 2.2 voxels
in-plane, and small lesions are centred on a slice, so that every drawn
lesion is imaged. Labels are exact: a lesion's label is the voxels whose centres lie inside it and inside the
(possibly bulged) liver, one connected piece of at least MIN_VOXELS voxels; label 2 is always part of the liver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lits.core.config.synthetic import SyntheticParams
from lits.data.synthetic.canvas import REF_SIZE
from lits.data.synthetic.fields import capsule_distance2, smooth_field, unit
from lits.data.synthetic.phases import Phase

CLASSES = ("hypodense", "isodense", "hyperdense")
PLACEMENTS = ("parenchyma", "boundary", "vessel")
ISO_MAX_DIAMETER_MM = 30.0  # larger lesions drawn isodense become hypodense: big masses show (by texture at least)
MIN_VOXELS = 3  # a lesion that would label fewer voxels (clipped by the liver surface or a vein) is not drawn


@dataclass
class Lesion:
    """One drawn lesion as the generator meant it (the labels are what it drew: ``voxels`` of them)."""

    center: tuple[float, float, float]  # mm (u, v, w) on the canvas
    diameter_mm: float  # drawn diameter of the main sphere, anatomical mm
    contrast: str  # one of CLASSES
    delta_hu: float  # lesion body minus liver, signed
    placement: str  # one of PLACEMENTS
    exophytic: bool  # bulges out of the liver contour
    necrotic: bool
    rim: bool
    voxels: int  # label voxels it added


def lesion_count(rng: np.random.Generator, p: SyntheticParams) -> int:
    """Lesions of one case: 0 with ``tumor_free_fraction``, else 1 + negative binomial, at most ``max_tumors``."""
    if p.max_tumors == 0 or rng.random() < p.tumor_free_fraction:
        return 0
    shape = p.lesion_count_shape
    extra = int(rng.negative_binomial(shape, shape / (shape + p.lesion_count_mean))) if p.lesion_count_mean else 0
    return int(min(p.max_tumors, 1 + extra))


def lesion_diameters(
    rng: np.random.Generator, p: SyntheticParams, n: int, mass_scale: float = 1.0, lesion_scale: float = 1.0
) -> np.ndarray:
    """``n`` drawn diameters (mm, largest first): lognormal, the first one a dominant mass with
    ``dominant_lesion_fraction``, all clipped to ``tumor_diameter_range_mm``; then a mass scaled by `mass_scale`
    (it is sized against the liver, like the anatomy) and every other lesion by `lesion_scale` (sized in the
    scanner's mm, like the real lesions whose size statistics it follows)."""
    d = p.lesion_diameter_mm * np.exp(rng.normal(0.0, p.lesion_diameter_sigma, n))
    scale = np.full(n, lesion_scale)
    if n and rng.random() < p.dominant_lesion_fraction:
        d[0] = p.dominant_diameter_mm * math.exp(rng.normal(0.0, p.dominant_diameter_sigma))
        scale[0] = mass_scale
    return np.sort(np.clip(d, *p.tumor_diameter_range_mm) * scale)[::-1]


def contrast_classes(rng: np.random.Generator, p: SyntheticParams, phase: Phase, n: int) -> np.ndarray:
    """``n`` indices into CLASSES, drawn with ``contrast_fractions`` (hyperdense share weighted by the phase)."""
    w = np.asarray(p.contrast_fractions, dtype=float) * np.array([1.0, 1.0, phase.hyperdense_weight])
    return rng.choice(3, size=n, p=w / w.sum())


def contrast_delta(rng: np.random.Generator, p: SyntheticParams, phase: Phase, cls: int) -> float:
    """Lesion body minus liver (HU) for class ``cls``."""
    if cls == 0:
        return -phase.hypodense_scale * float(rng.uniform(*p.hypodense_hu))
    if cls == 1:
        return float(rng.choice((-1.0, 1.0)) * rng.uniform(*p.isodense_hu))
    return float(rng.uniform(*p.hyperdense_hu))


class LiverSites:
    """Where lesion centres can go: the liver's depth (mm to its surface) on an in-plane subsampled grid, sorted
    once, so that a centre at a wanted depth is one binary search away whatever the number of lesions."""

    def __init__(self, canvas):
        self.c = canvas
        sl = canvas.liver_box
        self.f = f = 2 if canvas.n >= 128 else 1
        sub = canvas.liver[sl][::f, ::f, :]
        self.depth = ndimage.distance_transform_edt(sub, sampling=(f * canvas.s, f * canvas.s, canvas.sz))
        flat = np.flatnonzero(sub)
        self.index = flat[np.argsort(self.depth.ravel()[flat], kind="stable")]
        self.sorted_depth = self.depth.ravel()[self.index]
        self.origin = (sl[0].start, sl[1].start, sl[2].start)

    @property
    def max_depth(self) -> float:
        return float(self.sorted_depth[-1]) if len(self.index) else 0.0

    def pick(self, rng: np.random.Generator, lo: float, hi: float) -> np.ndarray | None:
        """A random liver point (mm) whose depth lies in [lo, hi], or None."""
        a = int(np.searchsorted(self.sorted_depth, lo, side="left"))
        b = int(np.searchsorted(self.sorted_depth, hi, side="right"))
        if b <= a:
            return None
        i, j, k = np.unravel_index(self.index[rng.integers(a, b)], self.depth.shape)
        c, f, o = self.c, self.f, self.origin
        jitter = rng.uniform(0.0, (f - 1) * c.s, 2)  # anywhere in the subsampled cell
        return np.array([c.u[i * f + o[0]] + jitter[0], c.v[j * f + o[1]] + jitter[1], c.w[k + o[2]]], dtype=float)

    def depth_at(self, pt) -> float:
        """Liver depth (mm) at mm point ``pt``; 0 outside the liver."""
        i, j, k = self.c.u2i(pt)
        i, j, k = (i - self.origin[0]) // self.f, (j - self.origin[1]) // self.f, k - self.origin[2]
        inside = all(0 <= x < n for x, n in zip((i, j, k), self.depth.shape))
        return float(self.depth[i, j, k]) if inside else 0.0


class LesionMixin:
    """Phantom step ``tumors``: draws the case's lesions (count, sizes, densities, placements) and paints them,
    largest first, into ``img`` and the ``tumor`` mask; ``lesions`` lists what was drawn (`Lesion`)."""

    def tumors(self):
        rng, p = self.rng, self.p
        self.lesions: list[Lesion] = []
        n = lesion_count(rng, p)
        if n == 0:
            return
        # masses scale with the anatomy (g); the others keep their mm at the default size (coarser at smaller sizes)
        diameters = np.maximum(lesion_diameters(rng, p, n, self.g, self.n / REF_SIZE), 2.2 * self.s)
        classes = contrast_classes(rng, p, self.phase, n)
        classes[(classes == 1) & (diameters >= ISO_MAX_DIAMETER_MM * self.g)] = 0  # large masses are not isodense
        shares = (1.0 - p.boundary_fraction - p.perivascular_fraction, p.boundary_fraction, p.perivascular_fraction)
        places = rng.choice(3, size=n, p=np.clip(shares, 0.0, 1.0))
        sites = LiverSites(self)
        if not len(sites.index):
            return
        self.liver_z = self.liver.any(axis=(0, 1))  # a bulging lesion stays within the liver's slices
        segs = [s for s in self.vessel_segs if s[2] >= 1.5 * self.g]
        weights = np.array([np.linalg.norm(s[1] - s[0]) * s[2] for s in segs])
        self._veins = (segs, weights / weights.sum() if len(segs) else weights)
        placed: list[tuple[np.ndarray, float]] = []
        for d, cls, place in zip(diameters, classes, places):
            c, radius, where, vein = self._lesion_site(sites, placed, float(d) / 2, PLACEMENTS[place])
            if c is None:
                continue
            lesion = self._draw_lesion(c, radius, int(cls), where, vein)
            if lesion is not None:
                self.lesions.append(lesion)
                placed.append((c, radius))

    def _lesion_site(self, sites: LiverSites, placed, radius: float, where: str):
        """(centre mm, radius, placement, vein segment or None): a site for the wanted placement, apart from the
        lesions already placed (up to 6 tries; then the last one, so that crowded livers get confluent lesions)."""
        rng = self.rng
        c, vein = None, None
        for _ in range(6):
            vein = None
            if where == "vessel":
                c, vein = self._vein_site(sites, radius)
            elif where == "boundary":
                c = sites.pick(rng, 0.0, max(0.5 * radius, sites.f * self.s, self.sz))
            else:
                c = sites.pick(rng, 0.8 * radius + self.s, np.inf)
                if c is None:  # too large for the liver: in its deepest part, shrunk to fit (a mass filling a lobe)
                    c = sites.pick(rng, 0.85 * sites.max_depth, np.inf)
                    radius = min(radius, 1.2 * sites.max_depth + 2 * self.g)
            if c is None:
                where = "parenchyma"
                continue
            if radius < self.sz:  # small lesions centred on a slice (+-20%), so that they are imaged at all
                c[2] = round(c[2] / self.sz) * self.sz + rng.uniform(-0.2, 0.2) * self.sz
            if not placed:
                break
            centres, radii = np.array([c2 for c2, _ in placed]), np.array([r2 for _, r2 in placed])
            gap = np.linalg.norm(centres - c, axis=1) - radius - radii
            if gap.min() > 2.5 * self.s:  # two voxels of liver between lesions: the scorer counts them apart
                break
        return c, radius, where, vein

    def _vein_site(self, sites: LiverSites, radius: float):
        """A centre against a random intrahepatic vein (chosen by length x radius), and the vein, or (None, None)."""
        rng = self.rng
        segs, weights = self._veins
        if not segs:
            return None, None
        p0, p1, r0, r1 = segs[int(rng.choice(len(segs), p=weights))]
        t = rng.uniform(0.15, 0.85)
        axis = p0 + t * (p1 - p0)
        side = unit(np.cross(unit(p1 - p0), rng.normal(size=3)))
        c = axis + side * ((r0 + t * (r1 - r0)) + radius * rng.uniform(0.55, 0.9))  # overlapping the vein a little
        if sites.depth_at(c) < 0.35 * radius:
            return None, None
        return c, (p0, p1, r0, r1)

    def _draw_lesion(self, c: np.ndarray, radius: float, cls: int, where: str, vein) -> Lesion | None:
        """Paints one lesion and adds its label; None if it left no label voxel."""
        rng, p = self.rng, self.p
        shape = self._lesion_shape(c, radius)
        if shape is None:
            return None
        sl, q, field, (U, V, W) = shape
        exophytic = where == "boundary" and rng.random() < 0.5
        if exophytic:
            self._bulge(sl, q, W)
        allowed = self.liver[sl]
        if vein is not None:  # the vein keeps its voxels: the lesion wraps around it
            p0, p1, r0, r1 = (np.asarray(x, dtype=np.float32) for x in vein)
            dist2, t = capsule_distance2(U, V, W, p0, p1)
            allowed = allowed & (dist2 > (r0 + (r1 - r0) * t) ** 2)
        inside = (q < 1) & allowed
        lab, n = ndimage.label(inside)
        if n > 1:  # a lesion is one object: keep its largest piece (a vein or the liver surface may cut it)
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            inside = lab == int(sizes.argmax())
            allowed = allowed & ndimage.binary_dilation(inside, iterations=2)
        if inside.sum() < MIN_VOXELS:
            return None
        delta = contrast_delta(rng, p, self.phase, cls)
        body, necrotic, rim = self._lesion_texture(q, field, delta, radius, cls)
        edge = rng.uniform(0.06, 0.3)  # sharp to ill-defined margin, in units of the radius
        weight = np.clip(0.5 + (1.0 - q) / np.float32(2 * edge), 0.0, 1.0) * allowed
        cur = self.img[sl]
        cur += weight * (body - cur)
        self.tumor[sl] |= inside
        centre = (float(c[0]), float(c[1]), float(c[2]))
        return Lesion(centre, 2 * radius, CLASSES[cls], delta, where, exophytic, necrotic, rim, int(inside.sum()))

    def _lesion_shape(self, c: np.ndarray, radius: float):
        """(slices, q, texture field, (U, V, W)) of a lesion: a sphere, lobulated by up to three smaller ones when
        it spans a few voxels, its normalised radius q (< 1 inside) deformed by a smooth field; None off-grid."""
        rng, g = self.rng, self.g
        spheres = [(c, radius)]
        if radius > 3 * self.s:
            for _ in range(int(rng.integers(0, 4))):
                spheres.append(
                    (c + unit(rng.normal(size=3)) * radius * rng.uniform(0.45, 0.85), radius * rng.uniform(0.35, 0.7))
                )
        amp = rng.uniform(0.04, 0.18)
        ext = (1.7 if len(spheres) > 1 else 1.35) * radius * (1 + 2 * amp) + self.s
        box = self.crop(c - ext, c + ext)
        if box is None:
            return None
        sl, U, V, W = box
        q = None
        for cc, r in spheres:
            d2 = (U - np.float32(cc[0])) ** 2 + (V - np.float32(cc[1])) ** 2 + (W - np.float32(cc[2])) ** 2
            qi = np.sqrt(d2) / np.float32(r)
            q = qi if q is None else np.minimum(q, qi)
        coords = (U.ravel(), V.ravel(), W.ravel())
        q = q * (1 + np.float32(amp) * smooth_field(rng, coords, max(0.6 * radius, 3 * g)))
        return sl, q, smooth_field(rng, coords, max(0.4 * radius, 2 * g)), (U, V, W)

    def _lesion_texture(self, q: np.ndarray, field: np.ndarray, delta: float, radius: float, cls: int):
        """(HU of the lesion over its box, necrotic, rim): heterogeneous body, optional necrotic core and rim."""
        rng, p = self.rng, self.p
        hetero = rng.uniform(0.15, 0.5) * abs(delta) + rng.uniform(2.0, 6.0)
        body = np.float32(self.liver_hu + delta) + np.float32(hetero) * field
        necrotic = bool(2 * radius >= p.necrosis_min_diameter_mm * self.g and rng.random() < p.necrosis_probability)
        if necrotic:  # an irregular fluid-like core (5-30 HU)
            core = np.clip((np.float32(rng.uniform(0.35, 0.65)) - q + np.float32(0.1) * field) / np.float32(0.15), 0, 1)
            body = body + core * (np.float32(rng.uniform(5.0, 30.0)) - body)
        rim = bool(cls == 0 and rng.random() < p.rim_probability)
        if rim:  # peripheral enhancement: a ring brighter than the lesion body
            ring = np.clip(1 - np.abs(q - np.float32(0.86)) / np.float32(0.12), 0, 1)
            body = body + np.float32(rng.uniform(20.0, 45.0) + 0.5 * abs(delta)) * ring
        return body, necrotic, rim

    def _bulge(self, sl, q: np.ndarray, W: np.ndarray) -> None:
        """Lets a surface lesion grow out of the liver into unclaimed cavity (fat) below the diaphragm and within the
        liver's slices: those voxels become liver (and lesion), connected to the part inside."""
        below_dome = (self.dome[sl[0], sl[1]][:, :, None] - np.float32(5 * self.g)) > W
        free = (q < 1) & self.cav3[sl] & ~self.occ[sl] & below_dome & self.liver_z[sl[2]][None, None, :]
        if not free.any():
            return
        inside = (q < 1) & self.liver[sl]
        lab, _ = ndimage.label(inside | free)
        keep = np.unique(lab[inside])
        exo = free & np.isin(lab, keep[keep > 0])
        self.img[sl][exo] = np.float32(self.liver_hu)
        self.liver[sl] |= exo
        self.occ[sl] |= exo
