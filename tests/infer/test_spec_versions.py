"""The inference spec's versions: version 1 checkpoints (before tta_flips; tests/fixtures/spec-v1-89c50ec/) keep their
tuned post-processing and calibration and predict what they predicted; the flips a run trains with are recorded."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import compose_train

from lits.core.config import TrainConfig, typed
from lits.core.errors import LitsError
from lits.infer.predict import predict
from lits.infer.spec import SPEC_VERSION, InferenceSpec, spec_from_checkpoint, trained_flips

FIXTURES = Path(__file__).parents[1] / "fixtures" / "spec-v1-89c50ec"


def test_a_version_1_spec_keeps_its_tuning_and_has_no_flips():
    state = torch.load(FIXTURES / "tuned.pt", weights_only=True)
    assert state["inference"]["version"] == 1 and "tta_flips" not in state["inference"]
    spec = spec_from_checkpoint(state, "tuned.pt")
    assert spec.tta_flips == () and spec.views(True) == ((),)
    assert spec.postprocess.__dict__ == state["inference"]["postprocess"]
    assert list(spec.calibration) == state["inference"]["calibration"] != [1.0, 1.0]
    again = InferenceSpec.from_dict(json.loads(json.dumps(spec.to_dict())), "again")
    assert again == spec and spec.to_dict()["version"] == SPEC_VERSION == 2


@pytest.mark.parametrize("tta", [False, True])
def test_a_version_1_checkpoint_predicts_the_same_label_map(tta, tmp_path, caplog):
    with caplog.at_level("WARNING"):
        predict(
            {
                "ckpt": str(FIXTURES / "tuned.pt"),
                "input": str(FIXTURES / "volume-4.nii.gz"),
                "output": str(tmp_path / "out"),
                "tta": tta,
                "progress": False,
                "paths": {"output_dir": str(tmp_path / "run")},
            }
        )
    written = np.asarray(nib.load(tmp_path / "out" / "test-segmentation-4.nii.gz").dataobj)
    expected = np.asarray(nib.load(FIXTURES / "prediction-4.nii.gz").dataobj)
    np.testing.assert_array_equal(written, expected)  # tta=true: nothing trained to average, the same map
    notes = [r.getMessage() for r in caplog.records if "trained without mirroring" in r.getMessage()]
    assert len(notes) == (1 if tta else 0) and "\n" not in "".join(notes)


def test_an_unknown_spec_version_is_one_line():
    state = torch.load(FIXTURES / "tuned.pt", weights_only=True)
    state["inference"]["version"] = 7
    with pytest.raises(LitsError, match=r"^x.pt: inference spec version 7 is not one this lits reads \(1, 2\)"):
        spec_from_checkpoint(state, "x.pt")


@pytest.mark.parametrize(
    "overrides, flips",
    [
        ((), ()),
        (("augment.p_mirror_x=0.5",), ((3,),)),
        (("augment.p_mirror_y=0.5",), ((2,),)),
        (("augment.p_mirror_x=0.5", "augment.p_mirror_y=0.5"), ((3,), (2,), (2, 3))),
        (("augment.p_mirror_x=0.5", "augment.enabled=false"), ()),
    ],
)
def test_the_trained_flips_follow_the_mirror_augmentation(overrides, flips):
    cfg = typed(TrainConfig, compose_train(*overrides))
    assert trained_flips(cfg.augment) == flips
