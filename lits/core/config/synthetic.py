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
    num_slices: tuple[int, int] = (48, 72)  # min/max slices per case (inclusive)
    spacing_xy: tuple[float, float] = (1.2, 1.6)  # mm, square pixels, drawn per case
    spacing_z: tuple[float, float] = (2.5, 5.0)  # mm, drawn per case
    tumor_free_fraction: float = 0.12  # probability that a case has no tumour at all
    max_tumors: int = 6
    # --- realism knobs -------------------------------------------------------------------
    liver_hu: tuple[float, float] = (95.0, 135.0)  # enhanced parenchyma, per case
    vessel_contrast_hu: tuple[float, float] = (50.0, 80.0)  # hepatic/portal veins above liver
    tumor_contrast_hu: tuple[float, float] = (20.0, 70.0)  # typical hypodensity below liver
    low_contrast_fraction: float = 0.15  # share of tumours drawn from low_contrast_hu instead
    low_contrast_hu: tuple[float, float] = (8.0, 20.0)
    tumor_diameter_mm: float = 66.0  # median diameter of the dominant tumour (lognormal)
    satellite_diameter_mm: float = 34.0  # median diameter of further tumours
    tumor_diameter_sigma: float = 0.40  # lognormal sigma of tumour diameters
    small_tumor_fraction: float = 0.3  # share of further tumours that are small (hard to detect)
    small_tumor_diameter_mm: float = 10.0  # their median diameter
    tumor_diameter_range_mm: tuple[float, float] = (5.0, 110.0)  # clip
    tumor_band: float = 0.30  # tumour centres lie in a z-band of this fraction of the liver height
    noise_sd_hu: tuple[float, float] = (10.0, 20.0)  # scanner noise sd, per case
    psf_sigma_mm: tuple[float, float] = (0.55, 0.85)  # in-plane partial-volume blur, per case
    slice_profile: float = 0.35  # z blur sigma as a fraction of the slice spacing
    gallbladder_probability: float = 0.75

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

        def bad(name: str, why: str) -> LitsError:
            return LitsError(
                f"synthetic data: invalid setting {name}={getattr(self, name)!r} ({why}); "
                f"fix data.synthetic.{name} in your config or on the command line"
            )

        for name in (
            "num_slices",
            "spacing_xy",
            "spacing_z",
            "liver_hu",
            "vessel_contrast_hu",
            "tumor_contrast_hu",
            "low_contrast_hu",
            "tumor_diameter_range_mm",
            "noise_sd_hu",
            "psf_sigma_mm",
        ):
            v = getattr(self, name)
            if not (isinstance(v, tuple) and len(v) == 2 and v[0] <= v[1]):
                raise bad(name, "expected [low, high] with low <= high")
        if int(self.size) != self.size or self.size < 48:
            raise bad("size", "must be an integer >= 48")
        if self.num_slices[0] < 16:
            raise bad("num_slices", "need at least 16 slices so liver-free slices exist at both ends")
        if self.spacing_xy[0] <= 0 or self.spacing_z[0] <= 0:
            raise bad("spacing_xy" if self.spacing_xy[0] <= 0 else "spacing_z", "must be positive")
        if not 0.0 <= self.tumor_free_fraction <= 1.0:
            raise bad("tumor_free_fraction", "must be within [0, 1]")
        if self.max_tumors < 0:
            raise bad("max_tumors", "must be >= 0")
        for name in ("low_contrast_fraction", "small_tumor_fraction", "gallbladder_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must be within [0, 1]")
        if self.noise_sd_hu[0] < 0:
            raise bad("noise_sd_hu", "must be >= 0")


@dataclass(unsafe_hash=True)  # mutable: Hydra overrides it; hashable once normalised
class SyntheticConfig(SyntheticParams):
    """`data.synthetic`: the generator's parameters plus how many cases to make from which seed."""

    NOUN = "generator setting"

    num_cases: int = 40
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "num_cases", checks.integer("data.synthetic.num_cases", self.num_cases, 1))
        object.__setattr__(self, "seed", checks.integer("data.synthetic.seed", self.seed, 0))

    @property
    def params(self) -> SyntheticParams:
        """The phantom parameters alone (what a data set's manifest records besides num_cases and seed)."""
        return SyntheticParams(**{f.name: getattr(self, f.name) for f in fields(SyntheticParams)})
