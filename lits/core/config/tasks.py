"""The training task's config: every group together (configs/train.yaml composes it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

import lits.core.config.checks as checks
from lits.core.config.augment import AugmentConfig
from lits.core.config.data import DataConfig
from lits.core.config.infer import PathsConfig, PostprocessConfig
from lits.core.config.model import ModelConfig
from lits.core.config.train import FaultsConfig, LossConfig, OptimConfig, TrainerConfig


@dataclass
class TrainConfig:
    """python train.py [experiment=NAME] [group=option ...] [key=value ...]"""

    name: str = "train"  # run folder: outputs/<name>/<timestamp>; every experiment sets its own
    seed: int = 0  # weights, sampling, augmentation and the split (unless data.split.seed)
    evaluate_after: str | None = None  # test | val: when training ends, score best.pt on that split (<run>/evaluate)
    # when training ends, choose calibration and post-processing on the validation split for best.pt and last.pt and
    # store them there (evaluate.py and predict.py then apply them); false: the checkpoints keep postprocess.*
    tune_after: bool = True
    data: DataConfig = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # before optim: its t_max follows max_epochs
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    faults: FaultsConfig | None = None  # test-only fault injection (debug=faults)

    def __post_init__(self) -> None:
        self.seed = checks.integer("seed", self.seed, 0)
        self.tune_after = checks.flag("tune_after", self.tune_after)
        self.evaluate_after = checks.optional(checks.choice, "evaluate_after", self.evaluate_after, ("test", "val"))
        if self.model.in_channels != self.data.input_channels:
            raise checks.fail(
                "model.in_channels",
                self.model.in_channels,
                f"data.context_slices={self.data.context_slices} gives {self.data.input_channels} input "
                f"channels; set model.in_channels={self.data.input_channels}",
            )
        multiple = self.model.size_multiple
        if self.data.crop_size % multiple:
            raise checks.fail(
                "data.crop_size",
                self.data.crop_size,
                f"give a multiple of {multiple}, the total stride of model.arch={self.model.arch}",
            )
