"""scripts/compare_runs.py on a miniature real multirun: train.py -m experiment=bce,progressive (smoke-sized), one run
evaluated into <run>/evaluate, then the table, results.md and curves.png; and its one-line errors."""

import json

import pytest
from conftest import REPO, SMOKE_SIZES, one_line_error, run_cli

# the smoke training's settings as command-line overrides (the experiments themselves come from the sweep), every
# epoch validated, quietly
SWEEP = [*SMOKE_SIZES, "trainer.val_every=1", "trainer.log_images=false", "trainer.progress=false"]
TEST_COLUMNS = [
    "test tumour Dice per case",
    "test tumour Dice global",
    "test liver Dice per case",
    "test lesion recall (IoU > 0.5)",
]
VAL_COLUMNS = [
    "val tumour Dice per case, post-processed @best",
    "val tumour Dice per case, raw @last",
    "val tumour Dice global, raw @last",
    "val liver Dice per case, raw @last",
    "train min",
]


def compare(*args, cwd):
    return run_cli("scripts/compare_runs.py", *args, cwd=cwd)


def parse_table(text):
    """markdown table on stdout -> {experiment: {column: cell}}"""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]
    return header, {row["experiment"]: row for row in rows}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One smoke-sized sweep (data and outputs under a temporary folder, as test_end_to_end), bce evaluated."""
    work = tmp_path_factory.mktemp("compare")
    sweep = work / "outputs/multirun/sweep"
    result = run_cli(
        "train.py", "-m", "experiment=bce,progressive", "seed=0", *SWEEP, f"hydra.sweep.dir={sweep}", cwd=work
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {p.name.split("_", 1)[1]: p for p in sweep.iterdir() if p.is_dir()}
    assert set(runs) == {"bce_seed0", "progressive_seed0"}, sorted(runs)
    bce = runs["bce_seed0"]
    result = run_cli(
        "evaluate.py",
        f"ckpt={bce}/checkpoints/best.pt",
        f"hydra.run.dir={bce}/evaluate",
        "ablation=false",
        "report.montages=false",
        "report.plot=false",
        "tensorboard_dir=null",
        "progress=false",
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = work / "comparison"
    result = compare(sweep, "--out", out, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, out, runs


@pytest.mark.slow
def test_table_has_one_row_per_experiment_in_ablation_order(compared):
    stdout, _, _ = compared
    header, rows = parse_table(stdout)
    assert header == ["experiment", "runs", "seeds", *VAL_COLUMNS, *TEST_COLUMNS]
    assert list(rows) == ["bce", "progressive"]
    for row in rows.values():
        assert (row["runs"], row["seeds"]) == ("1", "0")
        for column in VAL_COLUMNS:  # n = 1: "mean ± —"
            mean, std = row[column].split(" ± ")
            assert std == "—" and float(mean) >= 0.0 and (column == "train min" or float(mean) <= 1.0), (
                column,
                row[column],
            )


@pytest.mark.slow
def test_test_columns_come_from_the_evaluated_run_only(compared):
    stdout, _, runs = compared
    _, rows = parse_table(stdout)
    metrics = json.loads((runs["bce_seed0"] / "evaluate/metrics.json").read_text())
    keys = ["tumor_dice_per_case", "tumor_dice_global", "liver_dice_per_case", "tumor_lesion_recall_iou50"]
    for column, key in zip(TEST_COLUMNS, keys):
        mean, std = rows["bce"][column].split(" ± ")
        assert float(mean) == pytest.approx(metrics["post"][key], abs=5e-5) and std == "—"
        assert rows["progressive"][column] == "—"
    history = [json.loads(line) for line in (runs["progressive_seed0"] / "history.jsonl").read_text().splitlines()]
    summary = json.loads((runs["progressive_seed0"] / "train_summary.json").read_text())
    best = next(h for h in history if h["epoch"] == summary["best_epoch"])
    assert float(rows["progressive"][VAL_COLUMNS[0]].split(" ± ")[0]) == pytest.approx(
        best["val/tumor_dice_post"], abs=5e-5
    )
    assert float(rows["progressive"][VAL_COLUMNS[3]].split(" ± ")[0]) == pytest.approx(
        history[-1]["val/liver_dice"], abs=5e-5
    )


@pytest.mark.slow
def test_out_writes_results_and_curves(compared):
    stdout, out, runs = compared
    results = (out / "results.md").read_text()
    assert stdout.strip() in results  # the printed table
    assert "`post`" in results and "tumor_lesion_recall_iou50" in results  # which stage and metric each column is
    for run_dir in runs.values():  # named relative to the folder compare_runs.py ran from (the sweep's work folder)
        assert f"`{run_dir.resolve().relative_to(run_dir.resolve().parents[3])}`" in results
    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_folders_without_finished_runs_are_one_line_errors(tmp_path):
    assert "no finished training runs" in one_line_error(compare(tmp_path, cwd=tmp_path))
    run_dir = tmp_path / "stopped"  # a run stopped before train_summary.json
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra/config.yaml").write_text("name: bce\nseed: 0\n")
    (run_dir / "history.jsonl").write_text(json.dumps({"epoch": 1, "train/alpha": 0.0}) + "\n")
    assert "no finished training runs" in one_line_error(compare(run_dir, cwd=tmp_path))
    assert "folder not found" in one_line_error(compare(tmp_path / "nowhere", cwd=tmp_path))
    assert not (tmp_path / "results.md").exists()


def test_help_explains_the_columns():
    result = compare("--help", cwd=REPO)
    assert result.returncode == 0 and "--out" in result.stdout and "tumor_lesion_recall_iou50" in result.stdout


def fake_run(folder, name, seed, post_dice, minutes=1.0, test=None):
    """A finished run's files as train.py writes them (two epochs, best = last), optionally evaluated."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra/config.yaml").write_text(
        f"name: {name}\nseed: {seed}\npaths:\n  output_dir: ${{hydra:runtime.output_dir}}\n"
    )
    val = {"val/liver_dice": 0.9, "val/tumor_dice": post_dice - 0.1, "val/tumor_dice_global": 0.7}
    history = [
        {"epoch": 1, "train/alpha": 0.0, **val, "val/tumor_dice_post": post_dice / 2},
        {"epoch": 2, "train/alpha": 0.5, **val, "val/tumor_dice_post": post_dice},
    ]
    (folder / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history) + '{"epoch": 3, "tor')
    (folder / "train_summary.json").write_text(json.dumps({"best_epoch": 2, "minutes": minutes}))
    if test is not None:
        (folder / "evaluate").mkdir()
        (folder / "evaluate/metrics.json").write_text(
            json.dumps(
                {
                    "split": "test",
                    "main_stage": "post",
                    "raw": {},
                    "post": {
                        "tumor_dice_per_case": test,
                        "tumor_dice_global": test,
                        "liver_dice_per_case": test,
                        "tumor_lesion_recall_iou50": test,
                    },
                }
            )
        )


def test_seeds_are_summarised_and_rows_ordered(tmp_path):
    fake_run(tmp_path / "a/0_focal_seed0", "focal", 0, 0.3)
    fake_run(tmp_path / "a/1_dice_seed0", "dice", 0, 0.4, minutes=2.0, test=0.5)
    fake_run(tmp_path / "b/deeper/0_dice_seed1", "dice", 1, 0.6, minutes=4.0)
    fake_run(tmp_path / "b/progressive", "progressive", 0, 0.7)
    fake_run(tmp_path / "b/bce", "bce", 3, 0.1)
    result = compare(tmp_path / "a", tmp_path / "b", tmp_path / "a", "--out", tmp_path / "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, rows = parse_table(result.stdout)
    assert list(rows) == ["bce", "dice", "progressive", "focal"]
    dice = rows["dice"]
    assert (dice["runs"], dice["seeds"]) == ("2", "0,1")  # folder a given twice: each run counted once
    assert dice[VAL_COLUMNS[0]] == "0.5000 ± 0.1414"
    assert dice[VAL_COLUMNS[1]] == "0.4000 ± 0.1414" and dice["train min"] == "3.00 ± 1.41"
    assert dice[TEST_COLUMNS[0]] == "0.5000 ± — (1/2)"
    assert rows["focal"][TEST_COLUMNS[3]] == "—"
    assert (tmp_path / "out/curves.png").stat().st_size > 5000
