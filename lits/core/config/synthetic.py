"""The `data.synthetic` settings: the embedded phantom generator's parameters (lits/data/synthetic/)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import lits.core.config.checks as checks
from lits.core.errors import LitsError


@dataclass(unsafe_hash=True)  # mutable: Hydra overrides it; hashable once normalised
class SyntheticParams:
    """Generator settings. Ranges are (low, high) and are drawn uniformly per case (or per
    structure). Every field has a default; tuples may be given as lists (Hydra)."""

    size: int = 256  # in-plane voxels (square)
    num_slices: tuple[int, int] = (34, 50)  # slices per case (inclusive range) at spacing_z and a 1.4 mm FOV
    spacing_xy: tuple[float, float] = (0.7, 0.9)  # mm, square pixels, drawn per case (the body fits the FOV)
    spacing_z: tuple[float, float] = (2.5, 5.0)  # mm, drawn per case ...
    thin_slice_fraction: float = 0.6  # ... except in this share of cases, thin-slice scans of the same z extent ...
    thin_spacing_z: tuple[float, float] = (0.8, 1.4)  # ... with this spacing (mm) and proportionally more slices
    # --- contrast phase and scanner, per case -------------------------------------------------------------
    phase_fractions: tuple[float, float, float] = (0.75, 0.15, 0.10)  # portal-venous, arterial, delayed phase
    liver_hu: tuple[float, float] = (95.0, 135.0)  # enhanced parenchyma in the portal-venous phase
    vessel_contrast_hu: tuple[float, float] = (50.0, 80.0)  # portal/hepatic veins above liver (portal-venous)
    noise_sd_hu: tuple[float, float] = (6.0, 19.0)  # scanner noise sd, per case (low- to high-noise protocols)
    psf_sigma_mm: tuple[float, float] = (0.55, 0.85)  # in-plane partial-volume blur, per case
    slice_profile: float = 0.35  # z blur sigma as a fraction of the slice spacing
    # --- lesions: count, size, density, texture, placement (sources: lits/data/synthetic/lesions.py) -------
    tumor_free_fraction: float = 0.10  # share of cases without any lesion
    max_tumors: int = 75  # most lesions drawn for one case
    lesion_count_mean: float = 6.0  # mean number of lesions besides the first in a tumour-bearing case
    lesion_count_shape: float = 0.45  # negative-binomial shape of that number: smaller = heavier tail
    dominant_lesion_fraction: float = 0.75  # share of tumour-bearing cases whose first lesion is a large mass
    dominant_diameter_mm: float = 65.0  # median diameter of such a mass (lognormal)
    dominant_diameter_sigma: float = 0.45  # its lognormal sigma
    lesion_diameter_mm: float = 10.5  # median diameter of every other lesion (lognormal)
    lesion_diameter_sigma: float = 0.7  # its lognormal sigma
    tumor_diameter_range_mm: tuple[float, float] = (4.0, 120.0)  # drawn diameters are clipped to this
    contrast_fractions: tuple[float, float, float] = (0.86, 0.06, 0.08)  # hypo-, iso-, hyperdense lesions
    hypodense_hu: tuple[float, float] = (40.0, 100.0)  # how far a hypodense lesion lies below the liver
    isodense_hu: tuple[float, float] = (3.0, 10.0)  # |lesion - liver| of an isodense lesion (either sign)
    hyperdense_hu: tuple[float, float] = (15.0, 50.0)  # how far a hyperdense lesion lies above the liver
    necrosis_probability: float = 0.5  # share of lesions >= necrosis_min_diameter_mm with a necrotic core
    necrosis_min_diameter_mm: float = 20.0  # lesions at least this large may have a necrotic core
    rim_probability: float = 0.25  # share of hypodense lesions with an enhancing rim
    boundary_fraction: float = 0.25  # lesions centred at the liver surface (half of them bulge out of it)
    perivascular_fraction: float = 0.20  # lesions placed against a hepatic or portal vein
    gallbladder_probability: float = 0.75  # share of cases with a gallbladder beside the liver

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self._check_ranges()
        self._check_lesions()

    def _bad(self, name: str, why: str) -> LitsError:
        return LitsError(
            f"synthetic data: invalid setting {name}={getattr(self, name)!r} ({why}); "
            f"fix data.synthetic.{name} in your config or on the command line"
        )

    def _check_ranges(self) -> None:
        for name in _RANGES:
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 2 and v[0] <= v[1]):
                raise self._bad(name, "expected [low, high] with low <= high")
        if int(self.size) != self.size or self.size < 48:
            raise self._bad("size", "must be an integer >= 48")
        if self.num_slices[0] < 16:
            raise self._bad("num_slices", "need at least 16 slices so liver-free slices exist at both ends")
        for name in ("spacing_xy", "spacing_z", "thin_spacing_z"):
            if getattr(self, name)[0] <= 0:
                raise self._bad(name, "must be positive")
        if self.noise_sd_hu[0] < 0:
            raise self._bad("noise_sd_hu", "must be >= 0")
        for name in ("phase_fractions", "contrast_fractions"):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 3 and min(v) >= 0 and abs(sum(v) - 1.0) < 1e-6):
                raise self._bad(name, "expected three shares >= 0 that sum to 1")

    def _check_lesions(self) -> None:
        for name in _SHARES:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise self._bad(name, "must be within [0, 1]")
        if self.boundary_fraction + self.perivascular_fraction > 1.0:
            raise self._bad("perivascular_fraction", "boundary_fraction + perivascular_fraction must be <= 1")
        if self.max_tumors < 0:
            raise self._bad("max_tumors", "must be >= 0")
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise self._bad(name, "must be > 0")
        if self.tumor_diameter_range_mm[0] <= 0:
            raise self._bad("tumor_diameter_range_mm", "diameters must be > 0")
        for name in ("hypodense_hu", "isodense_hu", "hyperdense_hu"):
            if getattr(self, name)[0] < 0:
                raise self._bad(name, "contrasts are magnitudes: must be >= 0")
        if self.lesion_count_mean < 0:
            raise self._bad("lesion_count_mean", "must be >= 0")


_RANGES = (
    "num_slices",
    "spacing_xy",
    "spacing_z",
    "thin_spacing_z",
    "liver_hu",
    "vessel_contrast_hu",
    "noise_sd_hu",
    "psf_sigma_mm",
    "tumor_diameter_range_mm",
    "hypodense_hu",
    "isodense_hu",
    "hyperdense_hu",
)
_SHARES = (
    "thin_slice_fraction",
    "tumor_free_fraction",
    "dominant_lesion_fraction",
    "necrosis_probability",
    "rim_probability",
    "boundary_fraction",
    "perivascular_fraction",
    "gallbladder_probability",
)
_POSITIVE = (
    "lesion_count_shape",
    "dominant_diameter_mm",
    "dominant_diameter_sigma",
    "lesion_diameter_mm",
    "lesion_diameter_sigma",
    "necrosis_min_diameter_mm",
)


@dataclass(unsafe_hash=True)  # mutable: Hydra overrides it; hashable once normalised
class SyntheticConfig(SyntheticParams):
    """`data.synthetic`: the generator's parameters plus how many cases to make from which seed."""

    NOUN = "generator setting"

    num_cases: int = 40  # cases generated into data.root
    seed: int = 0  # the generator's seed: the same seed, the same volumes

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "num_cases", checks.integer("data.synthetic.num_cases", self.num_cases, 1))
        object.__setattr__(self, "seed", checks.integer("data.synthetic.seed", self.seed, 0))

    @property
    def params(self) -> SyntheticParams:
        """The phantom parameters alone (what a data set's manifest records besides num_cases and seed)."""
        return SyntheticParams(**{f.name: getattr(self, f.name) for f in fields(SyntheticParams)})
