"""The metric vocabulary (lits.core.vocabulary) against what the code produces: every monitor trainer.monitor accepts is
a key validation logs, every key validation logs has words for a reader, and the lesion score is one computation."""

import pytest
import torch
from conftest import fake_predict_volume, make_checkpoint, write_phantom_tree

from lits.core.config import TrainConfig, typed
from lits.core.vocabulary import DERIVED, MONITORS, VALIDATION, describe, heading, lesion_f1, lesion_score


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """validate() of a smoke checkpoint on two phantom cases (one with tumour), the network stood in for by
    probabilities read off the phantom (conftest.fake_predict_volume)."""
    import lits.train.validate as validation
    from lits.data.prepare import prepare
    from lits.infer.spec import spec_from_checkpoint

    tmp = tmp_path_factory.mktemp("vocabulary")
    root = write_phantom_tree(tmp / "data", cases=(0, 1))
    ckpt = make_checkpoint(tmp, root, test_ids=("0", "1"))
    state = torch.load(ckpt, weights_only=False)
    state["splits"] = {"train": [], "val": ["0", "1"], "test": []}
    cfg = typed(TrainConfig, state["config"])
    _, cases = prepare(cfg.data, cfg.seed, splits=state["splits"], only=("val",), progress=False)
    spec = spec_from_checkpoint(state, "best.pt")
    original = validation.predict_volume
    validation.predict_volume = fake_predict_volume
    try:
        return validation.validate(None, cases["val"], spec, torch.device("cpu"), "off", 2, False, False).metrics
    finally:
        validation.predict_volume = original


def test_every_monitor_is_a_key_validation_produces(validated):
    assert set(MONITORS) <= set(validated), set(MONITORS) - set(validated)
    assert "val/lesion_score" in MONITORS and "val/tumor_dice_post" in MONITORS


def test_every_key_validation_produces_is_named_in_the_vocabulary(validated):
    unnamed = [k for k in validated if not k.startswith("val/lesion_dice_") and k not in {*VALIDATION, *DERIVED}]
    assert not unnamed, unnamed
    assert describe("val/tumor_dice").label == "tumour Dice per case, raw"
    assert heading("val/tumor_dice_post", short=True) == "tumour Dice"


def test_the_lesion_score_is_the_mean_of_tumour_dice_and_lesion_f1(validated):
    recall, precision = validated["val/lesion_recall_iou50"], validated["val/lesion_precision_iou50"]
    assert validated["val/lesion_f1_iou50"] == pytest.approx(lesion_f1(recall, precision))
    summary = {"tumor_dice_per_case": 0.6, "tumor_lesion_recall_iou50": 0.5, "tumor_lesion_precision_iou50": 1.0}
    assert lesion_score(summary) == pytest.approx((0.6 + 2 / 3) / 2)
    assert lesion_f1(0.0, 0.0) == 0.0


def test_a_key_named_nowhere_is_an_error():
    with pytest.raises(KeyError, match="val/tumour_dice"):
        describe("val/tumour_dice")
