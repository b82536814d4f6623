"""The HU range synthetic volumes are clipped to (the generator's settings are lits.core.config.SyntheticParams)."""

HU_MIN, HU_MAX = -1024, 3071  # the 12-bit CT range volumes are clipped to
