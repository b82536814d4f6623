"""--help of the three entry points: train.py lists every experiment and group option with a description; evaluate.py
and predict.py list every key they accept and nothing of training's."""

import dataclasses
import re

import pytest
from conftest import REPO, run_cli
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from lits.core.config import EvaluateConfig, ExportConfig, PredictConfig

TRAIN_GROUPS = ("data", "model", "loss", "optim", "trainer", "augment", "postprocess", "debug")
INTERNAL = ("name", "paths")  # keys a user does not set on these commands
COMMAND_LINE_NAMES = {"model_dir": "model"}  # predict.py model=DIR is its model_dir setting (predict.py says why)


def help_text(task: str) -> str:
    """The --help template configs/ compose for `task` (what Hydra prints)."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = hydra_compose(task, return_hydra_config=True, overrides=["paths.root_dir=/tmp", "paths.output_dir=/tmp"])
    return cfg.hydra.help.template


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "configs" / group).glob("*.yaml"))


def test_train_help_lists_every_experiment_with_a_description():
    text = help_text("train")
    for name in options("experiment"):
        assert re.search(rf"^  {name} +\S.{{20,}}$", text, re.MULTILINE), name  # one line, with what it does


def test_train_help_lists_every_group_and_its_options():
    text = help_text("train")
    groups = {m.group(1): m.group(2) for m in re.finditer(r"^  (\w+) +([\w, ]+?)  +\S", text, re.MULTILINE)}
    for group in TRAIN_GROUPS:
        listed = [o.strip() for o in groups[group].split(",")]
        assert sorted(listed) == options(group), group
    assert "trainer.max_time=" in text and "evaluate_after=test" in text and "--cfg job" in text


@pytest.mark.parametrize(
    ("task", "schema"), [("evaluate", EvaluateConfig), ("predict", PredictConfig), ("export", ExportConfig)]
)
def test_evaluate_and_predict_help_list_only_what_they_accept(task, schema):
    text = help_text(task)
    keys = [COMMAND_LINE_NAMES.get(f.name, f.name) for f in dataclasses.fields(schema) if f.name not in INTERNAL]
    missing = [key for key in keys if not re.search(rf"\b{key}[=.]", text)]
    assert not missing, missing
    for group in ("model", "trainer", "optim", "loss", "augment", "experiment"):
        if group not in keys:
            listed = re.search(rf"^ +{group}[=.]", text, re.MULTILINE)
            assert not listed, group  # training's groups are not options of these commands
    assert f"python {task}.py --cfg job" in text


@pytest.mark.slow
@pytest.mark.parametrize("task", ["train", "evaluate", "predict", "export"])
def test_help_from_the_command_line(task, tmp_path):
    result = run_cli(f"{task}.py", "--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith(f"{task}.py: "), result.stderr[-2000:]
    assert result.stdout.strip() == help_text(task).strip()
    assert not list(tmp_path.iterdir())  # --help writes nothing
