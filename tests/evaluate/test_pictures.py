"""What a researcher looks at, checked on the artefacts: error colours in the overlay, the montage and Dice-vs-volume
PNGs, progress.png from a history, best.pt's choice on ties, and the console's formatting helpers."""

import io
import math

import numpy as np
import pytest
from matplotlib.image import imread

from lits.evaluate.curves import progress_png, read_history
from lits.evaluate.pictures import ERROR_CLASSES, dice_volume_png, error_masks, error_overlay, montage_png
from lits.train.console import duration
from lits.train.state import Best


def pixels(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(png))


def test_every_voxel_gets_the_colour_of_what_the_prediction_did():
    reference = np.array([[0, 1, 1, 2, 2, 0, 0]])
    prediction = np.array([[0, 1, 0, 2, 1, 2, 1]])
    # 0: background; 1: liver correct; 2: liver missed; 3: tumour correct; 4: tumour missed (liver found);
    # 5: tumour extra (outside the reference liver: also liver extra); 6: liver extra
    masks = dict(zip([name for name, _, _ in ERROR_CLASSES], error_masks(reference, prediction)))
    assert masks["liver correct"].tolist() == [[0, 1, 0, 1, 1, 0, 0]]
    assert masks["liver missed (FN)"].tolist() == [[0, 0, 1, 0, 0, 0, 0]]
    assert masks["liver extra (FP)"].tolist() == [[0, 0, 0, 0, 0, 1, 1]]
    assert masks["tumour correct (TP)"].tolist() == [[0, 0, 0, 1, 0, 0, 0]]
    assert masks["tumour missed (FN)"].tolist() == [[0, 0, 0, 0, 1, 0, 0]]
    assert masks["tumour extra (FP)"].tolist() == [[0, 0, 0, 0, 0, 1, 0]]
    rgb = error_overlay(np.full((1, 7), 0.5), reference, prediction)
    assert np.allclose(rgb[0, 0], 0.5)  # background untouched
    colours = [tuple(np.round(rgb[0, k], 3)) for k in range(1, 7)]
    assert len(set(colours)) == 6  # six classes, six colours
    tumour = {name: np.array(colour) for name, colour, _ in ERROR_CLASSES[3:]}
    for k, name in ((3, "tumour correct (TP)"), (4, "tumour missed (FN)"), (5, "tumour extra (FP)")):
        assert np.argmax(rgb[0, k]) == np.argmax(tumour[name])  # the tumour colour dominates its voxels


def test_montage_shows_ct_errors_and_probability_per_slice():
    rng = np.random.default_rng(0)
    image = rng.random((3, 80, 90)).astype(np.float32)
    truth = np.zeros((3, 80, 90), np.uint8)
    truth[:, 20:60, 20:70] = 1
    truth[:, 30:40, 30:45] = 2
    pred = np.roll(truth, 3, axis=2)
    prob = (pred == 2).astype(np.float32) * 0.8
    png = montage_png(image, truth, pred, [4, 9, 13], "case 7", 10, prob, (-200.0, 250.0))
    rows = pixels(png)
    assert rows.shape[0] > 900 and rows.shape[1] > 900  # three rows of three panels, readable
    assert rows[..., :3].std() > 0.1 and len(png) > 50_000
    one = pixels(montage_png(image[:1], truth[:1], pred[:1], [4], "case 7", 10, None, None))
    assert one.shape[0] < rows.shape[0] / 2  # one row is a third as tall: a row per slice


def test_dice_volume_plot_places_tumour_free_cases_apart():
    rows = [
        {"case": "3", "tumor_volume_ref_ml": 0.0, "tumor_dice": 1.0},
        {"case": "5", "tumor_volume_ref_ml": 0.4, "tumor_dice": 0.2},
        {"case": "8", "tumor_volume_ref_ml": 35.0, "tumor_dice": 0.9},
    ]
    image = pixels(dice_volume_png(rows, "test, stage post"))
    assert image.shape[:2] == (500, 850) and image[..., :3].std() > 0.1


def test_progress_png_from_a_history_with_a_torn_line(tmp_path):
    records = [
        {"epoch": e, "train/loss": 1 / e, "train/bce": 0.5 / e, "train/dice": 0.9 / e, "train/alpha": min(1, e / 4),
         "train/lr": 3e-4 * math.cos(e / 10), "train/samples_per_s": 60.0}
        | ({"val/liver_dice_post": 0.9, "val/tumor_dice_post": 0.1 * e, "val/tumor_dice": 0.08 * e}
           if e % 2 == 0 else {})
        for e in range(1, 9)
    ]  # fmt: skip
    history = tmp_path / "history.jsonl"
    history.write_text("".join(f"{r}\n".replace("'", '"') for r in records) + '{"epoch": 9, "tr')
    assert [r["epoch"] for r in read_history(history)] == list(range(1, 9))
    best = {"metric": "val/tumor_dice_post", "value": 0.8, "epoch": 8}
    image = pixels(progress_png(read_history(history), best, mark=6, title="run"))
    assert image.shape[:2] == (750, 1200) and image[..., :3].std() > 0.1
    assert pixels(progress_png([], None)).shape[:2] == (750, 1200)  # before the first epoch: empty axes, no error


def test_best_checkpoint_ties_go_to_the_tiebreak_then_to_the_later_epoch():
    best = Best("val/tumor_dice_post", "val/liver_dice_post")
    assert not best.update({"train/loss": 0.3}, 1)  # not validated
    assert best.update({"val/tumor_dice_post": 0.0, "val/liver_dice_post": 0.5}, 2)
    assert best.update({"val/tumor_dice_post": 0.0, "val/liver_dice_post": 0.7}, 4)  # tie: better liver
    assert not best.update({"val/tumor_dice_post": 0.0, "val/liver_dice_post": 0.6}, 6)  # tie: worse liver
    assert best.update({"val/tumor_dice_post": 0.0, "val/liver_dice_post": 0.7}, 8)  # tie on both: the later
    assert not best.update({"val/tumor_dice_post": math.nan, "val/liver_dice_post": 0.9}, 9)
    assert best.update({"val/tumor_dice_post": 0.2, "val/liver_dice_post": 0.1}, 10)  # the monitor comes first
    assert (best.epoch, best.value, best.tiebreak_value) == (10, 0.2, 0.1)
    assert Best.from_dict(best.to_dict()) == best  # what a checkpoint carries for a resume
    plain = Best("val/tumor_dice_post")  # trainer.monitor_tiebreak=null: ties go to the later epoch
    assert plain.update({"val/tumor_dice_post": 0.0}, 2) and plain.update({"val/tumor_dice_post": 0.0}, 4)
    assert plain.epoch == 4


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (41, "41s"), (65, "1m05s"), (3599, "59m59s"), (3600, "1h00m"), (4380, "1h13m")]
)
def test_durations_read_at_a_glance(seconds, text):
    assert duration(seconds) == text


def test_validation_picture_shows_the_cases_with_most_tumour_error_first():
    from types import SimpleNamespace

    from lits.train.validate import SHOWN_CASES, _worst

    shown = []
    for case_id, wrong in [("a", 5), ("b", 40), ("c", 0), ("d", 12), ("e", 30), ("f", 1)]:
        label = np.zeros((4, 16, 16), np.uint8)
        label[:, 2:14, 2:14] = 1
        label[2, 4:8, 4:8] = 2
        post = label.copy()
        post[1].flat[:wrong] = 2  # `wrong` extra tumour voxels on slice 1
        case = SimpleNamespace(case_id=case_id, image=np.zeros((4, 16, 16), np.float16))
        shown = _worst(shown, case, label, post, np.zeros((4, 16, 16), np.float32), 0.5)
    assert [error for error, _ in shown] == [40, 30, 12, 5][:SHOWN_CASES]
    assert [view.caption.split(",")[0] for _, view in shown] == ["case b", "case e", "case d", "case a"][:SHOWN_CASES]
    assert all(", z=1\n" in view.caption for _, view in shown)  # each at its worst slice
