"""A task's config composed from configs/ in code, as its entry point composes it on the command line.

For the tools beside the entry points (scripts/, benchmarks/, studies/): the schema is registered and composition
errors are the entry points' one-line errors (`prepare_hydra`); there is no Hydra run, so nothing sets the run
folder: `paths.root_dir` and `paths.output_dir` are the current directory unless the overrides name them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from lits.core.cli import prepare_hydra

CHECKOUT = Path(__file__).resolve().parents[2]  # the repository: train.py, configs/, benchmarks/, studies/
CONFIG_DIR = CHECKOUT / "configs"
RUN_PATHS = ("paths.root_dir", "paths.output_dir")


def compose_raw(task: str, overrides: Sequence[str] = ()):
    """configs/<task>.yaml with `overrides` (Hydra's override grammar), as an OmegaConf DictConfig."""
    from hydra import compose, initialize_config_dir

    prepare_hydra()
    overrides = list(overrides)
    for key in RUN_PATHS:
        if not any(o.startswith((f"{key}=", f"+{key}=")) for o in overrides):
            overrides.append(f"{key}={os.getcwd()}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(task, overrides=overrides)


def compose_config(task: str = "train", overrides: Sequence[str] = ()):
    """configs/<task>.yaml with `overrides`, typed by the task's schema (`TrainConfig`, `EvaluateConfig`, ...): the
    ranges and choices checked as for the entry point, each failure one line naming the key and the fix."""
    from lits.core.config import EvaluateConfig, ExportConfig, PredictConfig, TrainConfig, typed

    schema = {"train": TrainConfig, "evaluate": EvaluateConfig, "predict": PredictConfig, "export": ExportConfig}
    if task not in schema:
        raise ValueError(f"task {task!r}: no such task; choose one of {', '.join(schema)}")
    return typed(schema[task], compose_raw(task, overrides))
