"""Checkpoints written before the versioned inference spec (lits at fe4a8f4, tests/fixtures/legacy-fe4a8f4/) are
migrated on load: evaluate and predict give exactly what that version gave on the same CT."""

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lits.core.config import ModelConfig, PostprocessConfig
from lits.evaluate.scoring import evaluate
from lits.infer.predict import predict
from lits.infer.spec import LEGACY_POSTPROCESS, SPEC_VERSION, InferenceSpec, spec_from_checkpoint

FIXTURES = Path(__file__).parents[1] / "fixtures" / "legacy-fe4a8f4"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
CHECKPOINTS = ("window", "ct_context")


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_the_spec_is_migrated_from_the_training_config(name):
    state = torch.load(FIXTURES / f"{name}.pt", weights_only=True)
    assert "format" not in state and "inference" not in state  # really an old checkpoint
    spec = spec_from_checkpoint(state, name)
    config = state["config"]
    assert spec.network == ModelConfig(**config["model"])
    assert spec.window == tuple(config["data"]["window"]) and spec.target_spacing_xy is None
    assert spec.context_slices == config["data"]["context_slices"]
    assert spec.temperature == config["loss"]["temperature"]
    assert spec.normalization.to_dict() == state["normalization"]
    assert spec.postprocess == LEGACY_POSTPROCESS == PostprocessConfig()  # what evaluate/predict applied then
    again = InferenceSpec.from_dict(json.loads(json.dumps(spec.to_dict())), name)  # survives the new format
    assert again == spec and spec.to_dict()["version"] == SPEC_VERSION


def test_a_checkpoint_older_still_without_normalization_reads_as_the_window():
    state = torch.load(FIXTURES / "window.pt", weights_only=True)
    del state["normalization"], state["config"]["data"]["context_slices"]
    spec = spec_from_checkpoint(state, "older")
    assert spec.normalization.kind == "window" and spec.context_slices == 0


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_predict_writes_the_same_label_map(name, tmp_path):
    predict(
        {
            "ckpt": str(FIXTURES / f"{name}.pt"),
            "input": str(FIXTURES / "volume-4.nii.gz"),
            "output": str(tmp_path / "out"),
            "progress": False,
            "paths": {"output_dir": str(tmp_path / "run")},
        }
    )
    written = np.asarray(nib.load(tmp_path / "out" / "test-segmentation-4.nii.gz").dataobj)
    expected = np.asarray(nib.load(FIXTURES / f"{name}-prediction-4.nii.gz").dataobj)
    np.testing.assert_array_equal(written, expected)
    counts = EXPECTED[name]["predict_volume_4"]
    assert (int((written >= 1).sum()), int((written == 2).sum())) == (counts["liver_voxels"], counts["tumor_voxels"])


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_evaluate_scores_the_same_voxels(name, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for file in ("volume-4.nii.gz", "segmentation-4.nii.gz"):
        shutil.copy(FIXTURES / file, data / file)
    result = evaluate(
        {
            "ckpt": str(FIXTURES / f"{name}.pt"),
            "data_root": str(data),
            "tensorboard_dir": None,
            "ablation": False,
            "progress": False,
            "report": {"montages": False, "plot": False},
            "paths": {"output_dir": str(tmp_path / "run")},
        }
    )
    assert result["num_cases"] == 1 and result["split"] == "test"
    # older lits counted epochs from 0 in the checkpoint; evaluate numbers them from 1, as lits does now
    saved_epoch = torch.load(FIXTURES / f"{name}.pt", weights_only=True)["epoch"]
    assert result["trained_epochs"] == saved_epoch + 1 and f"(epoch {saved_epoch + 1})" in result["headline"]
    with open(tmp_path / "run" / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    for stage, counts in EXPECTED[name]["evaluate_test_case_4"].items():
        assert [{k: int(r[k]) for k in counts} for r in rows if r["stage"] == stage] == [counts]


def test_its_own_phantom_v1_data_folder_is_read_as_it_is(tmp_path, caplog):
    """The checkpoint evaluated on the folder it was trained on, as it names it (no data_root=): the folder was made by
    version 1 of the generator (its synthetic.json has no "generator" field), which a new run refuses; a checkpoint's
    evaluation reads it as it is, with one line saying so."""
    folder = tmp_path / "data" / "synthetic-5x96-seed0"
    folder.mkdir(parents=True)
    for file in ("volume-4.nii.gz", "segmentation-4.nii.gz"):
        shutil.copy(FIXTURES / file, folder / file)
    (folder / "synthetic.json").write_text(json.dumps({"num_cases": 5, "seed": 0, "params": {"size": 96}}))
    state = torch.load(FIXTURES / "window.pt", weights_only=True)
    state["config"]["data"].update(root=str(folder), cache_dir=str(tmp_path / "data" / "cache"))  # where it was
    ckpt = tmp_path / "window.pt"
    torch.save(state, ckpt)
    settings = {"tensorboard_dir": None, "ablation": False, "progress": False, "report": {"montages": False,
                "plot": False}, "paths": {"output_dir": str(tmp_path / "run")}}  # fmt: skip
    result = evaluate({"ckpt": str(ckpt), **settings})
    assert result["num_cases"] == 1
    assert f"{folder}: made by synthetic generator version 1; read as it is" in caplog.text
    with open(tmp_path / "run" / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    for stage, counts in EXPECTED["window"]["evaluate_test_case_4"].items():  # what that lits scored
        assert [{k: int(r[k]) for k in counts} for r in rows if r["stage"] == stage] == [counts]

    from lits.core.errors import LitsError
    from lits.data.prepare import prepare

    with pytest.raises(LitsError, match="made by synthetic generator version 1, this lits makes version 3"):
        prepare(state["config"]["data"], 0, progress=False)  # a new run on it (no split given): refused, as before
