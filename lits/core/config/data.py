"""The `data` group: where the CT volumes are, how they are preprocessed, split and sampled for training.

Defaults are the real-data (LiTS / MSD / CSV) values; configs/data/*.yaml carry only what differs per layout
(configs/data/synthetic.yaml: the embedded synthetic data set and its CPU-sized settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

import lits.core.config.checks as checks
from lits.core.config.synthetic import SyntheticConfig
from lits.core.errors import LitsError

LAYOUTS = ("lits", "msd", "csv")
NORMALIZATIONS = ("window", "ct")
SPLIT_KEYS = ("val", "test", "train", "seed", "file")


@dataclass
class SplitConfig:
    """Patient-level split (lits/data/splits.py). val / test: a fraction of all cases or a list of case ids."""

    val: Any = 0.15  # fraction of all cases, or a list of case ids
    test: Any = 0.15  # fraction of all cases, or a list of case ids
    train: list[Any] | None = None  # null = every remaining case, or a list of case ids
    seed: int | None = None  # null = the run seed; set it to keep one split across runs with different seeds
    file: str | None = (
        None  # a JSON split file (ours, nnU-Net's splits_final.json, or folds + test): overrides the rest
    )

    @classmethod
    def from_value(cls, value: Any) -> SplitConfig:
        """`data.split` as composed: a mapping of the keys above, or the path of a JSON split file."""
        if isinstance(value, SplitConfig):
            return value
        if isinstance(value, str):
            return cls(file=value)
        if not isinstance(value, dict):
            raise checks.fail("data.split", value, "a mapping (val, test, train, seed, file) or a JSON split file path")
        unknown = sorted(set(value) - set(SPLIT_KEYS))
        if unknown:
            raise LitsError(f"data.split.{unknown[0]}: unknown key; valid: {', '.join(SPLIT_KEYS)}")
        return cls(**value)


@dataclass
class SamplingConfig:
    """Which training slices are drawn how often (lits/data/sampling.py LesionSampler)."""

    lesion_factor: float = 4.0  # a slice with tumour is drawn this many times as often as a liver-only slice
    liver_weight: float = 1.0  # a slice with liver and no tumour (the unit of the other weights)
    background_weight: float = 0.1  # slices without liver (inside the liver margin): still seen, rarely
    p_lesion_center: float = 0.5  # a tumour slice's crop is centred on a tumour voxel with this probability
    lesion_center: str = "voxel"  # that voxel: any tumour voxel (voxel), or one of a uniformly drawn lesion (lesion)
    # tumour draws per lesion: every 3D lesion of the training cases equally likely whatever its size (its slices
    # share its weight), crops centred as with lesion_center=lesion; the tumour share of draws is unchanged
    per_lesion: bool = False
    samples_per_epoch: int = 4000  # crops per epoch, all processes together

    def __post_init__(self) -> None:
        for name in ("lesion_factor", "liver_weight", "background_weight"):
            setattr(self, name, checks.number(f"data.sampling.{name}", getattr(self, name), 0.0))
        self.p_lesion_center = checks.probability("data.sampling.p_lesion_center", self.p_lesion_center)
        self.lesion_center = checks.choice(
            "data.sampling.lesion_center", self.lesion_center, ("voxel", "lesion"), "tumour-centred crop rule"
        )
        self.per_lesion = checks.flag("data.sampling.per_lesion", self.per_lesion)
        self.samples_per_epoch = checks.integer("data.sampling.samples_per_epoch", self.samples_per_epoch, 1)
        if self.liver_weight * max(self.lesion_factor, 1.0) + self.background_weight <= 0:
            raise checks.fail("data.sampling.liver_weight", self.liver_weight, "> 0 (or background_weight > 0)")


@dataclass
class DataConfig:
    """A data source (`data=lits|msd|csv|synthetic`), its preprocessing cache, split and training sampling."""

    name: str = "lits"  # the option's name; `synthetic` generates `root` on first use
    layout: str = "lits"  # lits | msd | csv: how cases are found under `root`
    root: str = MISSING  # the data folder (lits, msd) or CSV file (csv)
    cache_dir: str = "${paths.data_dir}/cache"  # preprocessed arrays, one folder per (window, target spacing, root)
    on_error: str = "fail"  # fail: stop at the first bad case | skip: leave it out, listed in skipped_cases.json
    affine_atol: float = 0.001  # max |volume affine - segmentation affine| (mm) accepted as the same grid
    window: tuple[float, float] = (-200.0, 250.0)  # HU window scaled to [0, 1] in the cache
    normalization: str = "window"  # window: the [0, 1] window values | ct: nnU-Net's CT z-score of the foreground
    target_spacing_xy: tuple[float, float] | None = None  # in-plane resampling to [sy, sx] mm; null: native grid
    prepare_workers: int | None = 4  # preprocessing processes (each holds one volume: ~1-2 GB); null = min(4, CPUs)
    lock_timeout_min: float = 30.0  # waiting for another process preparing the same cache: give up after this long
    # without seeing it progress (a dead one's lock is free at once)
    liver_margin_mm: float | None = 20.0  # training slices: the liver's z-range plus this margin; null = every slice
    context_slices: int = 0  # 2.5D: k neighbouring slices each side as extra channels (model.in_channels = 2k+1)
    # patient-level split: data.split.val / test (fractions or case ids), train, seed, file (lits/data/splits.py)
    split: Any = field(default_factory=lambda: {k: getattr(SplitConfig, k) for k in SPLIT_KEYS})
    fold: int | None = None  # k-fold cross-validation: fold k (0..num_folds-1) is val, the others train; null: off
    num_folds: int = 5  # folds of data.fold
    crop_size: int = 256  # training ROI crop (pixels); a multiple of the network's total stride
    num_workers: int = 4  # loader processes; they only read crops from the cache, a batch per request (each keeps a
    # GPU fed with far more crops/s than a 2D U-Net step takes: docs/results.md "Throughput" says how many a GPU needs)
    pin_memory: bool | None = None  # page-locked batches: asynchronous host-to-GPU copies; null = on when on CUDA
    prefetch_factor: int = 4  # batches each worker keeps ready (num_workers > 0): rides out a slow disk read
    persistent_workers: bool = True  # workers live across epochs (no restart, no warm-up at every epoch start)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    synthetic: SyntheticConfig | None = None  # generator settings (data=synthetic only)

    def __post_init__(self) -> None:
        self.layout = checks.choice("data.layout", self.layout, LAYOUTS)
        self.on_error = checks.choice("data.on_error", self.on_error, ("fail", "skip"))
        self.affine_atol = checks.number("data.affine_atol", self.affine_atol, 0.0)
        self.window = checks.pair("data.window", self.window)
        if not self.window[1] > self.window[0]:
            raise checks.fail("data.window", list(self.window), "[low, high] in HU with high > low, e.g. [-200,250]")
        self.normalization = checks.choice("data.normalization", self.normalization, NORMALIZATIONS)
        self.target_spacing_xy = checks.optional(
            checks.pair, "data.target_spacing_xy", self.target_spacing_xy, 0.0, True
        )
        self.prepare_workers = checks.optional(checks.integer, "data.prepare_workers", self.prepare_workers, 1)
        self.lock_timeout_min = checks.number("data.lock_timeout_min", self.lock_timeout_min, 0.0, open_low=True)
        self.liver_margin_mm = checks.optional(checks.number, "data.liver_margin_mm", self.liver_margin_mm, 0.0)
        self.context_slices = checks.integer("data.context_slices", self.context_slices, 0)
        self.split = SplitConfig.from_value(self.split)
        self.num_folds = checks.integer("data.num_folds", self.num_folds, 2)
        self.fold = checks.optional(checks.integer, "data.fold", self.fold, 0, self.num_folds - 1)
        self.crop_size = checks.integer("data.crop_size", self.crop_size, 16)
        self.num_workers = checks.integer("data.num_workers", self.num_workers, 0)
        self.prefetch_factor = checks.integer("data.prefetch_factor", self.prefetch_factor, 1)

    @property
    def input_channels(self) -> int:
        """The network's input channels for this data: the slice and its context slices."""
        return 2 * self.context_slices + 1
