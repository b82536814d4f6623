"""The generator's version and the HU range volumes are clipped to (its settings: lits.core.config.SyntheticParams)."""

HU_MIN, HU_MAX = -1024, 3071  # the 12-bit CT range volumes are clipped to

# Bumped whenever the same settings and seed would give other cases; recorded in a data set's manifest, so that a
# folder made by another version is refused instead of being read as this one's. Version 2: lesions with the LiTS
# data set's statistics (lesions.py) and per-case contrast phases (phases.py). Version 3: small lesions calibrated
# against a real CT's (voxels per lesion, contrast, contrast-to-noise ratio): real in-plane spacing (the body fits a
# 0.7-0.9 mm FOV), thin-slice scans in 60% of the cases, lesions other than masses sized in the scanner's mm.
GENERATOR_VERSION = 3
