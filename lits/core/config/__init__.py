"""The typed config schema: one home for every default.

Each config group is a dataclass here (`data`, `model`, `loss`, `optim`, `trainer`, `augment`, `postprocess`, `paths`,
`faults`) and each task composes them (`TrainConfig`, `EvaluateConfig`, `PredictConfig`, `ExportConfig`).
Hydra validates types against the schema when it composes configs/ (`register`); `typed` turns the composed config
into the dataclasses, whose `__post_init__` checks ranges, each failure one line naming the key and the fix. The YAML
files in configs/ carry only values that differ from these defaults.
"""

from lits.core.config.augment import AugmentConfig
from lits.core.config.data import DataConfig, SamplingConfig, SplitConfig
from lits.core.config.infer import (
    EvaluateConfig,
    ExportConfig,
    InferenceSettings,
    PathsConfig,
    PostprocessConfig,
    PostprocessOverrides,
    PredictConfig,
    ReportConfig,
)
from lits.core.config.model import ModelConfig
from lits.core.config.synthetic import SyntheticConfig, SyntheticParams
from lits.core.config.tasks import TrainConfig
from lits.core.config.train import DiceConfig, FaultsConfig, LossConfig, OptimConfig, ScheduleConfig, TrainerConfig
from lits.core.config.typed import Schema, typed

__all__ = [
    "AugmentConfig", "DataConfig", "DiceConfig", "EvaluateConfig", "ExportConfig", "FaultsConfig", "InferenceSettings",
    "LossConfig", "ModelConfig", "OptimConfig", "PathsConfig", "PostprocessConfig", "PostprocessOverrides",
    "PredictConfig", "ReportConfig", "SamplingConfig", "ScheduleConfig", "Schema", "SplitConfig", "SyntheticConfig",
    "SyntheticParams", "TrainConfig", "TrainerConfig", "typed",
]  # fmt: skip
