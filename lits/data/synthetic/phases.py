"""Contrast phases: how enhanced the liver, its veins and the aorta are, and how lesions show, per case.

LiTS collects contrast-enhanced abdominal CT from seven centres with their own scanners and protocols; the phase
of each volume is not given (assumed: mostly portal-venous, as the Medical Segmentation Decathlon describes its
liver task, built from the same scans, with some arterial and delayed scans among the centres' protocols). The
numbers below are typical attenuation values of each phase (HU), not measured on LiTS; the share of each phase
per case is ``SyntheticParams.phase_fractions`` (75 / 15 / 10%, assumed).

* portal-venous: liver ``liver_hu`` (95-135), veins ``vessel_contrast_hu`` (+50..+80) above it, aorta 150-200;
  lesions as drawn.
* arterial: liver 65-95, veins -15..+25 around it (barely filled: they can look like lesions), aorta 250-380;
  hyperdense lesions three times as likely, hypodense ones with 0.8 x their contrast.
* delayed: liver 75-105, veins +0..+20, aorta 110-150; hyperdense lesions half as likely, hypodense ones with
  0.7 x their contrast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lits.core.config.synthetic import SyntheticParams

PHASES = ("portal_venous", "arterial", "delayed")


@dataclass(frozen=True)
class Phase:
    """One case's enhancement: HU ranges to draw from and how lesion contrast changes."""

    name: str
    liver_hu: tuple[float, float]
    vessel_contrast_hu: tuple[float, float]
    aorta_hu: tuple[float, float]
    ivc_below_aorta_hu: tuple[float, float]  # the IVC fills later than the aorta
    hypodense_scale: float  # multiplies a hypodense lesion's contrast
    hyperdense_weight: float  # multiplies the share of hyperdense lesions (then renormalised)


def draw_phase(rng: np.random.Generator, p: SyntheticParams) -> Phase:
    """The case's contrast phase, drawn with ``p.phase_fractions``."""
    name = PHASES[int(rng.choice(3, p=np.asarray(p.phase_fractions, dtype=float)))]
    if name == "arterial":
        return Phase(name, (65.0, 95.0), (-15.0, 25.0), (250.0, 380.0), (120.0, 220.0), 0.8, 3.0)
    if name == "delayed":
        return Phase(name, (75.0, 105.0), (0.0, 20.0), (110.0, 150.0), (0.0, 20.0), 0.7, 0.5)
    return Phase(name, p.liver_hu, p.vessel_contrast_hu, (150.0, 200.0), (10.0, 45.0), 1.0, 1.0)
