"""evaluate.py: the post-processing ablation, reports, TensorBoard, prediction export, and scoring a folder of
predictions from any tool. Data: tiny noise-free phantoms on a flipped + permuted (non-canonical) grid."""

import base64
import contextlib
import html
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import nibabel as nib
import numpy as np
import pytest
from conftest import (
    PHANTOM_AFFINE,
    PHANTOM_SHAPE,
    ablation_phantom,
    evaluate_cfg,
    fake_predict_volume,
    make_checkpoint,
    read_csv_rows,
    run_cli,
    write_nifti,
    write_phantom_tree,
)
from scipy import ndimage

import lits.evaluate.scoring
import lits.evaluate.sources
from lits.core.errors import LitsError

SPACING_ML = 0.8 * 0.7 * 2.5 / 1000
CORE_VOXELS, TUMOR_VOXELS = 6 * 6 * 3, 8 * 8 * 3
# the default pipeline as applied (post = + min_tumor), then the candidates it leaves off
STAGES = ["raw", "largest_liver", "tumor_in_liver", "post", "post+fill_holes", "post+hysteresis"]


# --------------------------------------------------------------------------------------- checkpoint mode


# the checkpoint's run as train.py leaves it: four epochs, validated at 2 and 4, best.pt = epoch 4 (make_checkpoint)
HISTORY = [
    {"epoch": e, "train/loss": 1 / e, "train/bce": 0.5 / e, "train/dice": 0.8 / e, "train/alpha": 0.1 * e,
     "train/lr": 1e-3 / e, "train/samples_per_s": 50.0 + e}
    | ({"val/liver_dice": 0.2 * e, "val/liver_dice_post": 0.2 * e, "val/tumor_dice": 0.1 * e,
        "val/tumor_dice_post": 0.15 * e, "val/tumor_dice_global_post": 0.1 * e} if e % 2 == 0 else {})
    for e in (1, 2, 3, 4)
]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """Checkpoint-mode evaluation of three phantom cases with the fake model; returns (tmp_path, out dir, metrics).
    What it printed is in tmp_path/console.txt."""
    tmp_path = tmp_path_factory.mktemp("evaluated")
    ckpt = make_checkpoint(tmp_path, write_phantom_tree(tmp_path / "lits"))
    (ckpt.parent.parent / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in HISTORY))
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(lits.evaluate.sources, "predict_volume", fake_predict_volume)
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}"))
    (tmp_path / "console.txt").write_text(printed.getvalue())
    out = tmp_path / "eval"
    return tmp_path, out, json.loads((out / "metrics.json").read_text())


def test_ablation_rows_show_what_each_step_buys(evaluated):
    _, out, metrics = evaluated
    assert [s["name"] for s in metrics["stages"]] == STAGES and metrics["main_stage"] == "post"
    rows = read_csv_rows(out / "ablation_cases.csv")
    assert sorted((r["stage"], r["case"]) for r in rows) == sorted((s, c) for s in STAGES for c in "012")
    by = {(r["stage"], r["case"]): r for r in rows}
    spleen, outside, small = 6 * 6 * 4, 6 * 4 * 4, 8
    # raw: everything the fake model says, artefacts included
    assert int(by["raw", "0"]["liver_pred_voxels"]) == 20 * 22 * 8 + spleen + outside
    # + largest liver component: the spleen goes
    assert int(by["largest_liver", "0"]["liver_pred_voxels"]) == 20 * 22 * 8 + outside
    # + tumour in liver: the protrusion is cut back to the 2-voxel dilation
    assert int(by["tumor_in_liver", "0"]["tumor_pred_voxels"]) == CORE_VOXELS + small + 2 * 4 * 4
    # post (+ small components): the 8-voxel blob and the 32-voxel stub go; the rim is still missing
    assert int(by["post", "0"]["tumor_pred_voxels"]) == CORE_VOXELS
    assert float(by["post", "0"]["tumor_dice"]) == pytest.approx(2 * CORE_VOXELS / (CORE_VOXELS + TUMOR_VOXELS))
    assert float(by["post", "1"]["tumor_dice"]) == 1.0 and float(by["raw", "1"]["tumor_dice"]) == 0.0
    # candidates: hole filling changes nothing here; hysteresis lets the low-confidence rim join its confident core
    assert by["post+fill_holes", "0"] | {"stage": ""} == by["post", "0"] | {"stage": ""}  # no holes here
    assert float(by["post+hysteresis", "0"]["tumor_dice"]) == 1.0
    assert float(by["post+hysteresis", "0"]["liver_dice"]) == 1.0
    # aggregates follow; post scores at least what the applied steps before it do
    assert metrics["raw"]["liver_dice_per_case"] < metrics["largest_liver"]["liver_dice_per_case"] < 1.0
    assert metrics["post+hysteresis"]["tumor_dice_per_case"] == 1.0
    assert metrics["raw"]["tumor_lesion_precision_iou50"] < metrics["post"]["tumor_lesion_precision_iou50"] == 1.0
    assert float(by["post", "0"]["tumor_volume_ref_ml"]) == pytest.approx(TUMOR_VOXELS * SPACING_ML)


def test_report_files_name_every_case_and_stage(evaluated):
    _, out, metrics = evaluated
    rows = read_csv_rows(out / "cases.csv")
    assert {r["stage"] for r in rows} == {"raw", "post"} and sorted({r["case"] for r in rows}) == ["0", "1", "2"]
    for key in ("liver_assd", "tumor_msd", "tumor_lesion_tp_iou50", "tumor_burden_error", "tumor_volume_pred_ml"):
        assert key in rows[0]  # every metric per case
    assert metrics["num_cases"] == 3 and metrics["trained_epochs"] == 4 and metrics["split"] == "test"
    md = (out / "report.md").read_text()
    for stage in STAGES:
        assert f"`{stage}`" in md and f"| {stage}" in md.replace("| metric", "")  # legend and a table column
    for case in "012":
        png = out / "montages" / f"case-{case}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"(montages/case-{case}.png)" in md
    # montages worst first: by wrong tumour voxels of the main stage, the tumour-free perfect case last
    wrong = {r["case"]: int(r["tumor_pred_voxels"]) + int(r["tumor_ref_voxels"]) - 2 * int(r["tumor_intersection"])
             for r in rows if r["stage"] == "post"}  # fmt: skip
    order = metrics["montage_order"]
    assert [wrong[c] for c in order] == sorted(wrong.values(), reverse=True)
    assert [md.index(f"(montages/case-{c}.png)") for c in order] == sorted(md.index(f"(montages/case-{c}.png)")
                                                                           for c in order)  # fmt: skip
    html = (out / "report.html").read_text()
    assert '<div class="scroll"><table id="case-table"' in html  # scrolls sideways in a narrow window
    assert (out / "tumor_dice_vs_volume.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Lesion finding" in md and "| < 10 mm" in md and "(detection_curve.png)" in md
    assert (out / "detection_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.rglob(".*") if p.is_file()]  # no temp files left behind


def test_headline_metrics_go_to_their_own_tensorboard_run(evaluated):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tmp_path, _, metrics = evaluated
    run_tensorboard = tmp_path / "outputs/run/tensorboard"
    assert [p.relative_to(run_tensorboard).as_posix() for p in run_tensorboard.rglob("events.*")] == [
        f"evaluate/test/{p.name}" for p in (run_tensorboard / "evaluate/test").glob("events.*")
    ]  # a run of its own beside the training's: nothing written among the training curves
    events = EventAccumulator(str(run_tensorboard / "evaluate/test"))
    events.Reload()
    tags = events.Tags()
    # headline, main stage only, under the tags of the validation curves: a sibling run overlays them
    assert sorted(tags["scalars"]) == sorted(
        ["val/tumor_dice_post", "val/tumor_dice_global_post", "val/liver_dice_post", "val/liver_dice_global_post",
         "val/lesion_recall_iou50", "val/lesion_precision_iou50", "val/lesion_recall_iou0", "val/lesion_precision_iou0"]
    )  # fmt: skip
    [point] = events.Scalars("val/tumor_dice_post")
    assert point.step == 4 and point.value == pytest.approx(metrics["post"]["tumor_dice_per_case"])  # the epoch
    [point] = events.Scalars("val/lesion_recall_iou50")
    assert point.value == pytest.approx(metrics["post"]["tumor_lesion_recall_iou50"])
    assert {"test/stages/text_summary", "test/cases/text_summary"} <= set(tags["tensors"])  # the full tables


def test_console_starts_with_the_headline_and_stays_narrow(evaluated):
    tmp_path, out, metrics = evaluated
    lines = (tmp_path / "console.txt").read_text().splitlines()
    post = metrics["post"]
    assert (
        lines[0]
        == metrics["headline"]
        == (
            "test split, best.pt (epoch 4), 3 cases, stage post: tumour Dice "
            f"{post['tumor_dice_per_case']:.3f} per case "
            f"/ {post['tumor_dice_global']:.3f} global, liver Dice {post['liver_dice_per_case']:.3f}, lesion recall "
            f"{post['tumor_lesion_recall_iou50']:.2f} (IoU > 0.5) (1 of 3 cases tumour-free, scored 1 when nothing is "
            f"predicted; {metrics['tumor_free']['dice_with_tumor']:.3f} over the 2 with tumour)"
        )
    )
    assert max(len(line) for line in lines if line.startswith("|")) <= 120
    assert lines[-1] == f"wrote report.html, report.md, cases.csv, metrics.json and pictures to {out}"
    # case 1 has no tumour: its tumour ASSD is the scorer's 9001 in cases.csv, n/a on screen, explained once
    row = next(r for r in read_csv_rows(out / "cases.csv") if r["case"] == "1" and r["stage"] == "post")
    assert float(row["tumor_assd"]) == 9001.0
    case_1 = next(line for line in lines if line.startswith("| 1 "))
    assert "n/a" in case_1 and not [line for line in lines if line.startswith("|") and "9001" in line]
    assert sum("n/a: " in line for line in lines) == 1


class Page(HTMLParser):
    """report.html's parts a reader relies on: images, links, scripts and each table's rows (cells and sort keys)."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.links, self.scripts, self.tables = [], [], [], {}
        self.table = self.row = self.cell = None
        self.in_script = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        elif tag == "script":
            self.in_script = True
            self.scripts.append(attrs.get("src", ""))
        elif tag == "table":
            self.table = self.tables.setdefault(attrs.get("id"), {"head": [], "rows": []})
        elif tag == "th" and self.table is not None:
            self.table["head"].append({"key": attrs.get("data-key"), "sort": attrs.get("aria-sort")})
        elif tag == "tr" and self.table is not None:
            self.row = []
        elif tag == "td" and self.row is not None:
            self.cell = {"text": "", "value": attrs.get("data-value")}
            self.row.append(self.cell)

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False
        elif tag == "tr" and self.row:
            self.table["rows"].append(self.row)
            self.row = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.in_script:
            self.scripts.append(data)
        elif self.cell is not None:
            self.cell["text"] += data


def test_report_html_is_self_contained_and_complete(evaluated):
    _, out, metrics = evaluated
    page = Page((out / "report.html").read_text())
    assert page.images and not [u for u in page.images + page.links if "://" in u]  # no network, no server
    inline = [base64.b64decode(src.split(",", 1)[1]) for src in page.images if src.startswith("data:image/png;base64,")]
    # the training curves, the detection curve and the Dice-vs-volume plot, in the page itself
    assert len(inline) == 3
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000 for png in inline)
    files = [src for src in page.images if not src.startswith("data:")]
    assert sorted(files) == [f"montages/case-{c}.png" for c in "012"] and all((out / f).is_file() for f in files)
    # one row per case, the case id linking its montage, cells sortable by the raw value
    table = page.tables["case-table"]
    assert [h["key"] for h in table["head"]][:3] == ["case", "liver_dice", "tumor_dice"]
    assert sorted(row[0]["text"] for row in table["rows"]) == ["0", "1", "2"]
    assert {f"montages/case-{c}.png" for c in "012"} <= set(page.links)
    csv_rows = {r["case"]: r for r in read_csv_rows(out / "cases.csv") if r["stage"] == "post"}
    for row in table["rows"]:
        assert float(row[2]["value"]) == pytest.approx(float(csv_rows[row[0]["text"]]["tumor_dice"]))
    assert [row[0]["text"] for row in page.tables["stage-table"]["rows"]] == STAGES
    size_rows = page.tables["size-table"]["rows"]  # lesion finding by size, counts as the scorer matched them
    assert [row[0]["text"] for row in size_rows] == ["< 10 mm", "10-20 mm", "> 20 mm"]
    post = metrics["post"]
    assert [int(row[1]["text"]) for row in size_rows] == [
        int(post[f"tumor_lesion_ref_{b}"]) for b in ("under10mm", "10to20mm", "over20mm")
    ]
    assert "sortTable" in "".join(page.scripts) and not [s for s in page.scripts if s.endswith(".js")]
    assert metrics["headline"] in html.unescape((out / "report.html").read_text())


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def chromium(*args, cwd):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run",
             f"--user-data-dir={cwd / 'profile'}"]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium or Chrome installed: report.html not rendered in a browser")
def test_report_html_renders_and_sorts_in_a_real_browser(evaluated, tmp_path):
    _, out, _ = evaluated
    url = (out / "report.html").as_uri() + "#sort=tumor_dice:desc"  # the page's script sorts on load
    result = chromium("--dump-dom", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    table = Page(result.stdout).tables["case-table"]
    shown = [float(row[2]["value"]) for row in table["rows"]]
    assert len(shown) == 3 and shown == sorted(shown, reverse=True)
    assert [h["sort"] for h in table["head"]][2] == "descending"
    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1200,1800", url, cwd=tmp_path)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (1800, 1200) and pixels[..., :3].std() > 0.05  # a page was drawn, not a blank


def test_saved_predictions_overlay_the_input_and_score_the_same(tmp_path, monkeypatch):
    # hysteresis on: the fake model's post-processed output is exactly the reference, so the exported file
    # must equal segmentation-N voxel for voxel on the stored (non-canonical) grid
    monkeypatch.setattr(lits.evaluate.sources, "predict_volume", fake_predict_volume)
    root = write_phantom_tree(tmp_path / "lits", cases=(0, 1))
    ckpt = make_checkpoint(tmp_path, root, test_ids=("0", "1"))
    lits.evaluate.scoring.evaluate(
        evaluate_cfg(
            tmp_path,
            f"ckpt={ckpt}",
            "postprocess.hysteresis=true",
            "save_predictions=true",
            "save_probabilities=true",
            "ablation=false",
            "report.montages=false",
        )
    )
    for case in ("0", "1"):
        ref = nib.load(root / f"segmentation-{case}.nii.gz")
        exported = nib.load(tmp_path / f"eval/predictions/test-segmentation-{case}.nii")
        assert exported.get_data_dtype() == np.uint8 and exported.shape == PHANTOM_SHAPE
        np.testing.assert_allclose(exported.affine, PHANTOM_AFFINE, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(exported.dataobj), np.asarray(ref.dataobj))
        assert nib.aff2axcodes(exported.affine) == nib.aff2axcodes(ref.affine)
        probs = nib.load(tmp_path / f"eval/predictions/test-segmentation-{case}_probabilities.nii.gz")
        assert probs.shape == (*PHANTOM_SHAPE, 2)
        tumor = probs.get_fdata()[..., 1]  # the fake model's raw tumour map: core and both false blobs at 0.9
        assert tumor.max() == pytest.approx(0.9, abs=0.01)
        assert (tumor > 0.5).sum() == (CORE_VOXELS if case == "0" else 0) + 8 + 6 * 4 * 4
    # the exported folder, scored as predictions from any tool, gives the post stage's numbers
    post = json.loads((tmp_path / "eval/metrics.json").read_text())["post"]
    lits.evaluate.scoring.evaluate(
        evaluate_cfg(
            tmp_path,
            f"predictions={tmp_path}/eval/predictions",
            "data=lits",
            f"data.root={root}",
            f"data.cache_dir={tmp_path}/cache",
            out="rescore",
        )
    )
    given = json.loads((tmp_path / "rescore/metrics.json").read_text())["given"]
    assert given == post and given["tumor_dice_per_case"] == 1.0


def test_resampled_cache_is_scored_and_exported_on_the_native_grid(tmp_path, monkeypatch):
    # data.target_spacing_xy: the network sees a coarser in-plane grid; probabilities go back to the CT's own
    # grid before post-processing, scoring and export
    monkeypatch.setattr(lits.evaluate.sources, "predict_volume", fake_predict_volume)
    root = write_phantom_tree(tmp_path / "lits", cases=(0,))
    ckpt = make_checkpoint(tmp_path, root, test_ids=("0",), overrides=["data.target_spacing_xy=[1.4,1.6]"])
    lits.evaluate.scoring.evaluate(
        evaluate_cfg(
            tmp_path,
            f"ckpt={ckpt}",
            "postprocess.hysteresis=true",
            "save_predictions=true",
            "ablation=false",
            "tensorboard_dir=null",
        )
    )
    [cached] = list((tmp_path / "cache").rglob("meta.json"))
    assert json.loads(cached.read_text())["resampled"]  # the network really saw another grid
    row = next(r for r in read_csv_rows(tmp_path / "eval/cases.csv") if r["stage"] == "post")
    assert int(row["liver_ref_voxels"]) == 20 * 22 * 8  # the reference on its native grid
    # a flip or shift of the grid would cost the liver > 5 points of Dice; the fake model's intensity
    # matching is blurred by the resampling, so the tumour only has to be found
    assert float(row["liver_dice"]) > 0.95 and float(row["tumor_dice"]) > 0.2
    exported = nib.load(tmp_path / "eval/predictions/test-segmentation-0.nii")
    assert exported.shape == PHANTOM_SHAPE
    ref = np.asarray(nib.load(root / "segmentation-0.nii.gz").dataobj)
    # overlays the input up to one voxel at the edges (resampling there and back)
    liver, ref_liver = np.asarray(exported.dataobj) >= 1, ref >= 1
    assert np.all(liver[ndimage.binary_erosion(ref_liver)]) and not np.any(liver[~ndimage.binary_dilation(ref_liver)])


# -------------------------------------------------------------------------------------- predictions mode


@pytest.mark.slow
def test_score_a_predictions_folder_from_the_command_line(tmp_path):
    root = write_phantom_tree(tmp_path / "lits")
    preds = tmp_path / "preds"
    preds.mkdir()
    _, seg0 = ablation_phantom()
    write_nifti(preds / "segmentation-0.nii.gz", seg0, PHANTOM_AFFINE)  # perfect
    missed = seg0.copy()
    missed[missed == 2] = 1  # tumour called liver: liver Dice stays 1, tumour Dice 0
    write_nifti(preds / "test-segmentation-2.nii", missed, PHANTOM_AFFINE)
    (preds / "notes.txt").write_text("ignored")
    result = run_cli(
        "evaluate.py",
        f"predictions={preds}",
        "data=lits",
        f"data.root={root}",
        "hydra.run.dir=out",
        "progress=false",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {r["case"]: r for r in read_csv_rows(tmp_path / "out/cases.csv")}
    assert sorted(rows) == ["0", "1", "2"] and {r["stage"] for r in rows.values()} == {"given"}
    assert float(rows["0"]["tumor_dice"]) == 1.0 and float(rows["0"]["tumor_assd"]) == 0.0
    assert float(rows["2"]["tumor_dice"]) == 0.0 and float(rows["2"]["liver_dice"]) == 1.0
    assert int(rows["2"]["tumor_lesion_fn_iou50"]) == 1
    # case 1 has no prediction file: scored as an empty prediction (tumour-free reference: tumour Dice 1, liver 0)
    assert float(rows["1"]["liver_dice"]) == 0.0 and float(rows["1"]["tumor_dice"]) == 1.0
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["mode"] == "predictions"
    assert metrics["missing_predictions"] == {"cases": ["1"], "of": 3, "rule": "empty"}
    assert metrics["tumor_free"] == {"cases": 1, "of": 3, "dice_with_tumor": 0.5}
    assert metrics["given"]["tumor_dice_per_case"] == pytest.approx(2 / 3)
    assert metrics["given"]["tumor_lesion_recall_iou50"] == 0.5
    assert {p.name for p in (tmp_path / "out/montages").iterdir()} == {"case-0.png", "case-1.png", "case-2.png"}
    notes = ("1 of 3 reference cases have no prediction file, scored as empty predictions: 1",
             "1 of 3 cases tumour-free, scored 1 when nothing is predicted; 0.500 over the 2 with tumour")  # fmt: skip
    report_md, report_html = ((tmp_path / "out" / name).read_text() for name in ("report.md", "report.html"))
    assert "| given" in report_md and all(note in report_md and note in report_html for note in notes)
    printed = [line for line in result.stdout.splitlines() if not re.match(r"\d\d:\d\d:\d\d ", line)]  # not the log
    assert printed[0].startswith(f"predictions {tmp_path / 'preds'}, 3 cases, stage given: tumour Dice 0.667 ")
    assert all(f"({note})" in printed[0] for note in notes)
    logged = (tmp_path / "out/evaluate.log").read_text().splitlines()  # what the console showed, then the log
    assert logged[: len(printed)] == printed and any("[WARNING]" in line for line in logged[len(printed) :])


def test_missing_predictions_skip_scores_only_the_files_present_and_says_so(tmp_path, capsys):
    root = write_phantom_tree(tmp_path / "lits")
    preds = tmp_path / "preds"
    preds.mkdir()
    write_nifti(preds / "segmentation-0.nii.gz", ablation_phantom()[1], PHANTOM_AFFINE)
    cfg = evaluate_cfg(tmp_path, f"predictions={preds}", "data=lits", f"data.root={root}", "missing_predictions=skip",
                       "report.montages=false", "report.plot=false")  # fmt: skip
    result = lits.evaluate.scoring.evaluate(cfg)
    assert result["num_cases"] == 1 and result["missing_predictions"]["cases"] == ["1", "2"]
    note = "2 of 3 reference cases have no prediction file, not scored (missing_predictions=skip): 1, 2"
    assert note in result["headline"] and note in (tmp_path / "eval/report.md").read_text()
    assert capsys.readouterr().out.splitlines()[0] == result["headline"]


def test_prediction_off_the_reference_grid_is_refused(tmp_path):
    root = write_phantom_tree(tmp_path / "lits", cases=(0,))
    preds = tmp_path / "preds"
    preds.mkdir()
    _, seg = ablation_phantom()
    write_nifti(preds / "segmentation-0.nii.gz", seg, np.diag([0.8, 0.7, 2.5, 1.0]))  # canonical, not the input's
    cfg = evaluate_cfg(
        tmp_path, f"predictions={preds}", "data=lits", f"data.root={root}", f"data.cache_dir={tmp_path}/cache"
    )
    with pytest.raises(LitsError, match="segmentation-0.nii.gz: affine differs from the reference volume-0.nii.gz"):
        lits.evaluate.scoring.evaluate(cfg)
    assert not (tmp_path / "eval").exists()  # refused before anything was scored or written


def _bad_prediction(tmp_path, name, data, affine=PHANTOM_AFFINE):
    root = write_phantom_tree(tmp_path / "lits", cases=(0,))
    preds = tmp_path / "preds"
    preds.mkdir(exist_ok=True)
    if data is not None:
        write_nifti(preds / name, data, affine)
    return evaluate_cfg(
        tmp_path, f"predictions={preds}", "data=lits", f"data.root={root}", f"data.cache_dir={tmp_path}/cache"
    )


@pytest.mark.parametrize(
    "name, data, message",
    [
        (
            "segmentation-0.nii",
            np.zeros((40, 36, 11), np.uint8),
            r"shape \(40, 36, 11\) differs from the reference volume-0.nii.gz \(40, 36, 12\)",
        ),
        ("segmentation-0.nii", np.full(PHANTOM_SHAPE, 3, np.uint8), r"segmentation-0.nii: values outside \{0, 1, 2\}"),
        ("segmentation-0.nii", np.full(PHANTOM_SHAPE, 0.5, np.float32), "segmentation-0.nii: non-integer voxel values"),
        (
            "segmentation-7.nii",
            np.zeros(PHANTOM_SHAPE, np.uint8),
            "segmentation-7.nii: no reference case with that number",
        ),
        (
            "prediction-0.nii",
            np.zeros(PHANTOM_SHAPE, np.uint8),
            r"no segmentation-N.nii\[.gz\] or test-segmentation-N.nii\[.gz\] files \(1 other",
        ),
    ],
)
def test_bad_prediction_files_are_refused(tmp_path, name, data, message):
    with pytest.raises(LitsError, match=message):
        lits.evaluate.scoring.evaluate(_bad_prediction(tmp_path, name, data))
    assert not (tmp_path / "eval/metrics.json").exists()


def test_two_files_for_one_case_are_refused(tmp_path):
    cfg = _bad_prediction(tmp_path, "segmentation-0.nii", np.zeros(PHANTOM_SHAPE, np.uint8))
    write_nifti(tmp_path / "preds/test-segmentation-0.nii.gz", np.zeros(PHANTOM_SHAPE, np.uint8), PHANTOM_AFFINE)
    with pytest.raises(LitsError, match="case 0 also predicted by"):
        lits.evaluate.scoring.evaluate(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ((), "nothing to evaluate: give ckpt=PATH"),
        (("predictions=somewhere",), "needs the references: add data=lits data.root=DIR"),
        (("predictions=somewhere", "ckpt=x.pt"), "both ckpt= and predictions= given"),
        (("predictions=nowhere", "data=lits", "data.root=."), "nowhere: predictions folder not found"),
        (("ckpt=x.pt", "data=lits"), "a checkpoint brings its own data config"),
    ],
)
def test_mode_errors(tmp_path, overrides, message):
    with pytest.raises(LitsError, match=message):
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, *overrides))


def test_each_distinct_label_map_is_scored_once(tmp_path, monkeypatch):
    # 'post+fill_holes' leaves the labels of 'post' as they were on these phantoms: its rows are copies, not
    # recomputations, and still equal a fresh scoring
    from lits.evaluate.metrics import case_metrics

    ckpt = make_checkpoint(tmp_path, write_phantom_tree(tmp_path / "lits", cases=(0,)), test_ids=("0",))
    monkeypatch.setattr(lits.evaluate.sources, "predict_volume", fake_predict_volume)
    scored = []

    def counting(pred, ref, spacing):
        scored.append(np.array(pred))
        return case_metrics(pred, ref, spacing)

    monkeypatch.setattr(lits.evaluate.scoring, "case_metrics", counting)
    lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={ckpt}", "report.montages=false"))
    rows = {r["stage"]: r for r in read_csv_rows(tmp_path / "eval/ablation_cases.csv")}
    assert list(rows) == STAGES and len(scored) == 5  # 6 stages, 5 different label maps
    assert not any(np.array_equal(a, b) for i, a in enumerate(scored) for b in scored[:i])
    assert rows["post+fill_holes"] | {"stage": ""} == rows["post"] | {"stage": ""}
