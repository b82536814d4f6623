"""lits.core.compose: the one way the tools beside the entry points (scripts/, benchmarks/, studies/) compose a task's
config -- the same values, checks and errors as on the command line."""

import pytest
from conftest import compose

from lits.core.compose import compose_config, compose_raw
from lits.core.config import EvaluateConfig, TrainConfig
from lits.core.errors import LitsError


def test_the_train_config_is_typed_with_the_overrides_and_the_cwd_as_run_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("train", ["model=unet_small", "trainer.batch_size=4", "experiment=bce"])
    assert isinstance(cfg, TrainConfig)
    assert cfg.trainer.batch_size == 4 and cfg.name == "bce"
    assert cfg.model.channels == list(compose("train", "model=unet_small").model.channels)
    assert cfg.paths.root_dir == str(tmp_path) and cfg.paths.output_dir == str(tmp_path)


def test_run_paths_given_in_the_overrides_are_kept(tmp_path):
    raw = compose_raw("train", [f"paths.root_dir={tmp_path}", "paths.output_dir=/somewhere/else"])
    assert raw.paths.root_dir == str(tmp_path) and raw.paths.output_dir == "/somewhere/else"


def test_each_task_gets_its_schema():
    assert isinstance(compose_config("evaluate", ["ckpt=/x/best.pt"]), EvaluateConfig)
    with pytest.raises(ValueError, match="no such task"):
        compose_config("fit")


def test_a_value_out_of_range_is_the_entry_points_one_line_error():
    with pytest.raises(LitsError, match="trainer.batch_size") as caught:
        compose_config("train", ["trainer.batch_size=0"])
    assert "\n" not in str(caught.value)
