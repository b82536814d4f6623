"""Every data source config group composes and carries the same keys, documented in the schema."""

import pytest
from conftest import REPO, compose_train
from omegaconf import OmegaConf

GROUPS = sorted(p.stem for p in (REPO / "configs/data").glob("*.yaml"))


def compose_data(group, *overrides):
    return compose_train(f"data={group}", "data.root=/x", *overrides).data


def test_all_sources_have_the_same_keys():
    assert {"synthetic", "lits", "msd", "csv"} <= set(GROUPS)
    keys = {g: set(OmegaConf.to_container(compose_data(g))) for g in GROUPS}
    assert all(k == keys["lits"] for k in keys.values()), keys
    assert {compose_data(g).layout for g in GROUPS} == {"lits", "msd", "csv"}
    text = (REPO / "lits/core/config/data.py").read_text()  # the schema: every default and what it means
    for key in (
        "layout",
        "on_error",
        "target_spacing_xy",
        "prepare_workers",
        "liver_margin_mm",
        "context_slices",
        "fold",
        "num_folds",
    ):
        line = next(line for line in text.splitlines() if line.startswith(f"    {key}:"))
        assert "#" in line or key == "num_folds", f"{key} needs a comment"


@pytest.mark.parametrize(
    "override, key, value",
    [
        ("data.split=/x/split.json", "split", "/x/split.json"),
        ("data.split.val=[1,2]", "split", {"val": [1, 2], "test": 0.15, "train": None, "seed": None, "file": None}),
        ("data.fold=2", "fold", 2),
        ("data.on_error=skip", "on_error", "skip"),
        ("data.target_spacing_xy=[0.8,0.8]", "target_spacing_xy", [0.8, 0.8]),
        ("data.context_slices=2", "context_slices", 2),
    ],
)
def test_overrides_reach_the_data_config(override, key, value):
    data = compose_data("msd", override)
    assert OmegaConf.to_container(data)[key] == value
