"""Register the schema with Hydra's ConfigStore, so that composing configs/ validates types against it.

Each group's YAML files start from the group's schema (`defaults: [base]`) and carry only the values that differ;
the task configs (train.yaml, evaluate.yaml, predict.yaml, export.yaml) start from their task schema.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from lits.core.config.augment import AugmentConfig
from lits.core.config.data import DataConfig
from lits.core.config.infer import EvaluateConfig, ExportConfig, PathsConfig, PostprocessConfig, PredictConfig
from lits.core.config.model import ModelConfig
from lits.core.config.tasks import TrainConfig
from lits.core.config.train import FaultsConfig, LossConfig, OptimConfig, TrainerConfig

GROUP_SCHEMAS = {
    "data": DataConfig,
    "model": ModelConfig,
    "loss": LossConfig,
    "optim": OptimConfig,
    "trainer": TrainerConfig,
    "augment": AugmentConfig,
    "postprocess": PostprocessConfig,
    "paths": PathsConfig,
    "faults": FaultsConfig,
}
TASK_SCHEMAS = {
    "train_schema": TrainConfig,
    "evaluate_schema": EvaluateConfig,
    "predict_schema": PredictConfig,
    "export_schema": ExportConfig,
}


def register() -> None:
    """Idempotent: store every group's schema as `<group>/base` and every task's as `<task>_schema`."""
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="base", node=schema)
    for name, schema in TASK_SCHEMAS.items():
        store.store(name=name, node=schema)
