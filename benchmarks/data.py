"""The benchmarks' data: synthetic LiTS-format cases generated once into --data-dir and reused, their data config,
and the augmentation settings the loader benchmarks share."""

from __future__ import annotations

from pathlib import Path

from benchmarks.probes import say

AUG = {
    "p_rotate": 0.5,
    "max_rotate_deg": 15.0,
    "p_elastic": 0.3,
    "elastic_sigma": 25.0,
    "elastic_points": 3,
    "p_intensity": 0.5,
    "intensity_scale": (0.9, 1.1),
    "intensity_shift": (-0.1, 0.1),
}


def synthetic_cases(data_dir: Path, num_cases: int, size: int, num_slices: tuple[int, int]) -> Path:
    """The synthetic LiTS-format data set (generated once, reused)."""
    from lits.data.synthetic import SyntheticParams, generate_dataset

    root = data_dir / f"synthetic-{num_cases}x{size}-z{num_slices[0]}-{num_slices[1]}"
    if not root.exists():
        say(f"generating {num_cases} synthetic {size}x{size} cases into {root} (once)")
        generate_dataset(root, num_cases=num_cases, seed=0, params=SyntheticParams(size=size, num_slices=num_slices))
    return root


def data_cfg(root: Path, cache_dir: Path, workers: int = 2):
    """The LiTS-layout data config of the benchmark data: every case in the training split, the rest as the schema's
    defaults (HU window [-200, 250], liver z-range + 20 mm)."""
    from lits.core.config import DataConfig

    return DataConfig(
        root=str(root), cache_dir=str(cache_dir), prepare_workers=workers, split={"val": 0.0, "test": 0.0}
    )
