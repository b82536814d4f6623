"""Is a CT in Hounsfield units? A plausibility check per volume, accumulated while its slabs are read (the cache and
predict.py read every CT through `lits.data.nifti.CasePair.chunks`).

The rules, chosen so that real CTs pass, including ones whose field of view is cropped to the body (no air around
it), as do the embedded synthetic data and the tests' tiny phantoms (soft tissue only, around -50..120 HU):

* error, not HU: more than 5% of the voxels outside [-3100, 5000] HU. CT numbers lie in about [-1024, 3071]; padding
  outside the scan circle goes down to -3024, metal on extended scales above 3071, both in few voxels. Likely cause:
  an unsigned/signed mix-up (values stored as uint16 with an offset of 32768, read as int16, wrap around).
* error, offset: fewer than 0.5% of the voxels in [-1100, -200) HU (no air, lung, gas, nor the noise of fat; padding
  outside the scan circle, at -2000 or -3024, does not count) while more than 20% are above 500 HU (denser than
  anything but bone): HU + 1024 stored without its rescale intercept (-1024).
* warning, bright: more than 25% of the voxels at or above 300 HU, brighter than soft tissue (bone and contrast fill a
  few percent of an abdomen): a wrong rescale slope, or not a CT.

A case failing a rule is refused with one line naming the file and the likely cause (or left out with
data.on_error=skip / on_error=skip); a warning is logged once per case and kept in the cache's meta.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HU_RANGE = (-3100.0, 5000.0)  # anything outside is not a CT number
MAX_OUTSIDE = 0.05
DARK_HU, MAX_DARK = (-1100.0, -200.0), 0.005  # air, lung, gas, fat noise (not scanner padding)
BRIGHT_HU, MIN_OFFSET_BRIGHT = 500.0, 0.20  # denser than soft tissue and contrast
SOFT_MAX_HU, MAX_SOFT_BRIGHT = 300.0, 0.25  # above soft tissue


@dataclass
class IntensityCheck:
    """Voxel counts of one volume, fed slab by slab (`add`), judged at the end (`verdict`)."""

    total: int = 0
    outside: int = 0
    dark: int = 0
    bright: int = 0
    above_soft: int = 0
    low: float = np.inf
    high: float = -np.inf

    def add(self, hu: np.ndarray) -> None:
        if hu.size == 0:
            return
        self.total += hu.size
        self.outside += int(np.count_nonzero((hu < HU_RANGE[0]) | (hu > HU_RANGE[1])))
        self.dark += int(np.count_nonzero((hu >= DARK_HU[0]) & (hu < DARK_HU[1])))
        self.bright += int(np.count_nonzero(hu > BRIGHT_HU))
        self.above_soft += int(np.count_nonzero(hu >= SOFT_MAX_HU))
        self.low, self.high = min(self.low, float(hu.min())), max(self.high, float(hu.max()))

    def verdict(self, path) -> tuple[str | None, str | None]:
        """(error, warning) for the volume at `path`, each one line or None."""
        if not self.total:
            return None, None
        share = {k: getattr(self, k) / self.total for k in ("outside", "dark", "bright", "above_soft")}
        seen = f"values {self.low:g}..{self.high:g}"
        if share["outside"] > MAX_OUTSIDE:
            return (
                f"{path}: not Hounsfield units ({100 * share['outside']:.0f}% of the voxels outside "
                f"[{HU_RANGE[0]:g}, {HU_RANGE[1]:g}] HU, {seen}); likely an unsigned/signed mix-up (offset 32768 "
                "read as int16) or a wrong rescale slope/intercept: re-export the CT in HU"
            ), None
        if share["dark"] < MAX_DARK and share["bright"] > MIN_OFFSET_BRIGHT:
            return (
                f"{path}: looks like HU + 1024 stored without its rescale intercept (no air, lung or fat in "
                f"[{DARK_HU[0]:g}, {DARK_HU[1]:g}) HU, {100 * share['bright']:.0f}% brighter than {BRIGHT_HU:g} HU, "
                f"{seen}); set "
                "scl_inter=-1024 in the header or re-export the CT in HU"
            ), None
        if share["above_soft"] > MAX_SOFT_BRIGHT:
            return None, (
                f"{path}: {100 * share['above_soft']:.0f}% of the voxels are at or above {SOFT_MAX_HU:g} HU, brighter "
                f"than soft tissue ({seen}); check its rescale slope/intercept (is it a CT in HU?)"
            )
        return None, None
