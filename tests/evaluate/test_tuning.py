"""evaluate.py tune=true: calibration and post-processing chosen on the validation split, stored in the checkpoint,
then used by evaluate and predict."""

import json

import numpy as np
import pytest
import torch
from conftest import evaluate_cfg, fake_predict_volume, make_checkpoint, write_phantom_tree

import lits.evaluate.scoring
import lits.evaluate.sources
import lits.evaluate.tuning
from lits.core.errors import LitsError
from lits.evaluate.calibration import calibrate
from lits.infer.spec import spec_from_checkpoint


def fake_calibrated_model(model, image, *args, temperature=(1.0, 1.0), **kwargs):
    """The phantom's fake network, with the per-head temperature of the spec applied as the real predictor does."""
    probs = fake_predict_volume(model, image)
    if np.ndim(temperature) == 0:
        temperature = (temperature, temperature)
    return np.stack([calibrate(probs[h], temperature[h]) for h in (0, 1)])


@pytest.fixture
def tuned(tmp_path, monkeypatch):
    for module in (lits.evaluate.sources, lits.evaluate.tuning):
        monkeypatch.setattr(module, "predict_volume", fake_calibrated_model)
    ckpt = make_checkpoint(tmp_path, write_phantom_tree(tmp_path / "lits"), test_ids=("0", "1", "2"))
    before = spec_from_checkpoint(torch.load(ckpt, weights_only=True), "ckpt")
    lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=val", "tune=true", out="tune"))
    return tmp_path, ckpt, before


def test_tuning_stores_the_best_validation_choice_in_the_checkpoint(tuned):
    tmp_path, ckpt, before = tuned
    state = torch.load(ckpt, weights_only=True)
    record, spec = state["tuning"], spec_from_checkpoint(state, "ckpt")
    scores = [c["score"] for c in record["candidates"]]
    assert record["split"] == "val" and record["criterion"] == "lesion_score" and record["cases"] == 1
    assert scores[record["chosen"]] == max(scores) and scores[0] < max(scores)  # something beat the default
    assert record["candidates"][0]["postprocess"] == {**before.postprocess.__dict__}  # candidate 0 = the old one
    assert spec.postprocess.__dict__ == record["candidates"][record["chosen"]]["postprocess"]
    assert spec.calibration == (record["calibration"]["liver"]["factor"], record["calibration"]["tumour"]["factor"])
    assert all(fit["ece_after"] <= fit["ece_before"] + 1e-9 for fit in record["calibration"].values())
    out = tmp_path / "tune"
    assert json.loads((out / "tuning.json").read_text())["chosen"] == record["chosen"]
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG" and "Chosen: candidate" in (
        out / "tuning.md"
    ).read_text()
    # the evaluation that follows the tuning reports the chosen setting on the same split
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["post"]["tumor_dice_per_case"] == pytest.approx(
        record["candidates"][record["chosen"]]["tumor_dice_per_case"]
    )


def test_later_evaluations_use_the_tuned_post_processing_and_calibration(tuned, monkeypatch):
    tmp_path, ckpt, before = tuned
    spec = spec_from_checkpoint(torch.load(ckpt, weights_only=True), "ckpt")
    assert spec.calibration != (1.0, 1.0)  # the fake network is not calibrated, so the fit moves both heads
    temperatures = []

    def recording_model(*args, temperature=(1.0, 1.0), **kwargs):
        temperatures.append(tuple(np.broadcast_to(temperature, (2,))))
        return fake_calibrated_model(*args, temperature=temperature, **kwargs)

    monkeypatch.setattr(lits.evaluate.sources, "predict_volume", recording_model)
    lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=test", out="test"))
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["postprocess"] == spec.postprocess.__dict__
    expected = tuple(before.temperature * c for c in spec.calibration)
    assert temperatures and all(t == pytest.approx(expected) for t in temperatures)


def test_tuning_again_fits_afresh_and_warns_about_tta(tuned, caplog):
    tmp_path, ckpt, _ = tuned
    first = spec_from_checkpoint(torch.load(ckpt, weights_only=True), "ckpt").calibration
    lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=val", "tune=true", out="again"))
    state = torch.load(ckpt, weights_only=True)
    # fitted on the network's own probabilities again, not on the already calibrated ones: the same factors
    assert spec_from_checkpoint(state, "ckpt").calibration == pytest.approx(first)
    assert state["tuning"]["tta"] is False
    with caplog.at_level("WARNING"):
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=test", "tta=true", out="tta"))
    # trained without mirroring: tta=true has no view to average, so it is not TTA and matches the tuning
    assert "trained without mirroring" in caplog.text and "tuned without flip TTA" not in caplog.text
    assert json.loads((tmp_path / "tta" / "metrics.json").read_text())["tta"] is False


def test_tta_averages_the_trained_flips_and_warns_when_tuned_without(tmp_path, monkeypatch, caplog):
    views = []

    def recording_model(model, image, *args, flips=((),), **kwargs):
        views.append(tuple(flips))
        return fake_calibrated_model(model, image, *args, **kwargs)

    for module in (lits.evaluate.sources, lits.evaluate.tuning):
        monkeypatch.setattr(module, "predict_volume", recording_model)
    tree = write_phantom_tree(tmp_path / "lits")
    ckpt = make_checkpoint(tmp_path, tree, overrides=("augment.p_mirror_x=0.5",))
    assert spec_from_checkpoint(torch.load(ckpt, weights_only=True), "ckpt").tta_flips == ((3,),)
    lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=val", "tune=true", out="tune"))
    # tuned on both view sets; this network ignores flips, so TTA ties and the identity view is kept (and scored)
    record = torch.load(ckpt, weights_only=True)["tuning"]
    assert record["tta"] is False and record["view_scores"]["tta"] == record["view_scores"]["identity"]
    assert set(views) == {((),), ((3,),)}
    views.clear()
    with caplog.at_level("WARNING"):
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=test", "tta=true", out="tta"))
    assert "tuned without flip TTA; pass tta=false" in caplog.text
    assert set(views) == {((),), ((3,),)}  # the identity and the one trained flip, predicted apart
    metrics = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    assert metrics["tta"] is True and metrics["tta_flips"] == [[3]]


def test_tuning_on_the_test_split_is_refused(tmp_path):
    ckpt = make_checkpoint(tmp_path, write_phantom_tree(tmp_path / "lits"))
    with pytest.raises(LitsError, match="tune=true with split=test: choosing on the test split would leak"):
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "tune=true"))


def test_an_unwritable_checkpoint_folder_is_refused_before_tuning(tmp_path, monkeypatch):
    import tempfile

    ckpt = make_checkpoint(tmp_path, write_phantom_tree(tmp_path / "lits"))
    real_mkdtemp, calls = tempfile.mkdtemp, []

    def read_only_checkpoints(*args, dir=None, **kwargs):  # the folder refuses writes (root ignores mode bits)
        if dir is not None and str(dir) == str(ckpt.parent):
            raise PermissionError(13, "Read-only file system")
        return real_mkdtemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", read_only_checkpoints)
    monkeypatch.setattr(lits.evaluate.tuning, "predict_volume", lambda *a, **k: calls.append(1))
    with pytest.raises(LitsError, match=r"checkpoints: cannot write the tuned checkpoint here \(Read-only file system"):
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=val", "tune=true"))
    assert not calls  # refused before any case was predicted


def test_evaluation_draws_the_lesion_detection_curve(tuned):
    from lits.evaluate.detection import CURVE_THRESHOLDS

    tmp_path, _, _ = tuned
    metrics = json.loads((tmp_path / "tune" / "metrics.json").read_text())
    points = metrics["detection_curve"]
    assert [p["threshold"] for p in points] == list(CURVE_THRESHOLDS)
    recalls = [p["recall_iou0"] for p in points]
    assert recalls == sorted(recalls, reverse=True)  # a higher threshold never finds more lesions here
    assert (tmp_path / "tune" / "detection_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_tuning_starts_from_the_command_line_post_processing(tmp_path, monkeypatch):
    for module in (lits.evaluate.sources, lits.evaluate.tuning):
        monkeypatch.setattr(module, "predict_volume", fake_calibrated_model)
    ckpt = make_checkpoint(tmp_path, write_phantom_tree(tmp_path / "lits"), test_ids=("0", "1", "2"))
    cfg = evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=val", "tune=true", "postprocess.liver_dilation=4", out="t")
    lits.evaluate.scoring.evaluate(cfg)
    record = torch.load(ckpt, weights_only=True)["tuning"]
    assert record["candidates"][0]["postprocess"]["liver_dilation"] == 4
    assert {c["postprocess"]["liver_dilation"] for c in record["candidates"]} == {4}  # the grid keeps it too


def test_the_candidate_cache_gives_every_candidates_own_labels_and_scores():
    """Shared masks before the size filter and metrics per distinct label map: the same labels as `postprocess`
    and the same scores as scoring each candidate afresh, for the whole grid."""
    from scipy.ndimage import gaussian_filter

    from lits.core.config import PostprocessConfig
    from lits.evaluate.metrics import aggregate, case_metrics
    from lits.evaluate.tuning import CandidateCache, ValidationCase, candidates, evaluate_candidate
    from lits.infer.postprocess import postprocess

    rng = np.random.default_rng(0)
    cases = []
    for i in range(2):
        field = gaussian_filter(rng.random((2, 14, 48, 40)), sigma=(0, 1, 3, 3))
        probs = (field - field.min()) / (field.max() - field.min())  # blobs at every threshold of the grid
        label = (probs[0] > 0.45).astype(np.uint8) + (probs[1] > 0.6)
        cases.append(ValidationCase(str(i), probs.astype(np.float16), label, (2.0, 0.8, 0.8), None))
    cache, distinct = CandidateCache(), set()
    for post in candidates(PostprocessConfig()):
        rows = []
        for i, case in enumerate(cases):
            probs = case.probs.astype(np.float32)
            expected = postprocess(probs[0], probs[1], post, case.spacing)
            labels = cache.labels(i, case, post)
            np.testing.assert_array_equal(labels, expected)
            distinct.add((i, expected.tobytes()))
            rows.append(case_metrics(expected, case.label, case.spacing, detail="lesions"))
        fresh = aggregate(rows)
        scored = evaluate_candidate(cases, post, "lesion_score", cache)
        assert scored["tumor_dice_per_case"] == fresh["tumor_dice_per_case"]
        assert scored["lesion_recall_iou50"] == fresh["tumor_lesion_recall_iou50"]
    assert len(cache.masks) == 2 * 8 + 2  # per case: 4 thresholds x hysteresis off / on, and the checkpoint's own
    assert len(cache.rows) == len(distinct) < 2 * len(candidates(PostprocessConfig()))  # each label map scored once


def test_tuning_keeps_tta_where_it_scores_higher_and_evaluate_then_uses_it(tmp_path, monkeypatch, caplog):
    """The identity view calls the whole liver tumour (0.97); the trained flip sees the phantom as it is. Averaged,
    the liver falls to about 0.5 and a threshold above it recovers the lesions: TTA wins on validation, is stored,
    and evaluate's default (tta=null) then averages the views."""
    views = []

    def one_good_view(model, image, *args, flips=((),), **kwargs):
        views.append(tuple(flips))
        probs = fake_calibrated_model(model, image, *args, **kwargs)
        if flips == ((),):
            probs[1] = np.where(probs[0] > 0.5, np.maximum(probs[1], 0.97), probs[1])
        return probs

    for module in (lits.evaluate.sources, lits.evaluate.tuning):
        monkeypatch.setattr(module, "predict_volume", one_good_view)
    ckpt = make_checkpoint(tmp_path, write_phantom_tree(tmp_path / "lits"), overrides=("augment.p_mirror_x=0.5",))
    with caplog.at_level("INFO"):
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=val", "tune=true", out="tune"))
    record = torch.load(ckpt, weights_only=True)["tuning"]
    scores = record["view_scores"]
    assert record["tta"] is True and scores["tta"]["score"] > scores["identity"]["score"] + 0.1
    assert scores["tta"]["tumor_dice_per_case"] > scores["identity"]["tumor_dice_per_case"]
    assert record["candidates"][record["chosen"]]["score"] == scores["tta"]["score"]
    assert "flip TTA on (best" in caplog.text
    views.clear()
    caplog.clear()
    with caplog.at_level("WARNING"):
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "split=test", out="test"))
    assert set(views) == {((),), ((3,),)} and "flip TTA" not in caplog.text  # as tuned: no warning
    assert json.loads((tmp_path / "test" / "metrics.json").read_text())["tta"] is True


@pytest.mark.parametrize(
    "tta, identity, kept",
    [
        ((0.62, 0.70), (0.60, 0.69), True),  # higher score, higher Dice
        ((0.62, 0.68), (0.60, 0.69), False),  # a higher lesion score that hides a lower tumour Dice
        ((0.60, 0.70), (0.60, 0.69), False),  # a tie keeps the identity view
    ],
)
def test_tta_is_kept_only_where_it_raises_the_criterion_without_lowering_dice(tta, identity, kept):
    best = [{"score": score, "tumor_dice_per_case": dice} for score, dice in (tta, identity)]
    assert lits.evaluate.tuning._tta_earns_its_views(*best) is kept
