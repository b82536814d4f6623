"""`python -m benchmarks gpu` stays runnable: its CPU mode (--device cpu --quick) runs the same code paths as the GPU
check on tiny sizes and writes the markdown report."""

import re

import nibabel as nib
import pytest
import torch
from conftest import run_cli, run_module

pytestmark = pytest.mark.slow


def section(report: str, title: str) -> list[dict]:
    """The rows of the markdown table under the `## title ...` heading."""
    block = report.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(columns, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_quick_cpu_check_writes_every_section(tmp_path):
    result = run_module("benchmarks", "gpu", "--device", "cpu", "--quick", "--out", "report.md", "--data-dir", "data",
                     "--budget-s", "900", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = (tmp_path / "report.md").read_text()
    assert re.search(r"budget 900 s: used \d+ s, held; skipped: 0", report) and "## Skipped" not in report
    assert result.stdout.strip() == report.strip()  # the report is what it prints; progress goes to stderr

    environment = {r["item"]: r["value"] for r in section(report, "Environment")}
    assert environment["torch"] == torch.__version__ and environment["device"] == "cpu"

    [smoke] = section(report, "fp16 AMP smoke training")
    assert smoke["evaluable"] == "yes" and smoke["bad steps"] == "0" and float(smoke["grad scale"]) > 0
    assert 0 <= float(smoke["test liver Dice"]) <= 1
    best = torch.load(tmp_path / "data/runs/smoke/checkpoints/best.pt", weights_only=True)
    assert best["config"]["trainer"]["amp"] == "fp16" and best["scaler"]["scale"] > 0  # the GradScaler was on

    rows = section(report, "Training throughput")
    assert [(r["model"], r["channels_last"], r["compile"]) for r in rows] == [
        ("unet_small", "on", "off"),
        ("unet_small", "off", "off"),
    ]
    for row in rows:
        assert float(row["pure step samples/s"]) > 0 and float(row["loop samples/s"]) > 0
        assert re.fullmatch(r"\d+%", row["loop / pure"])
        # the loop reads its losses back every 10 steps and at an epoch's end: one read in a short epoch, not one a step
        assert 0 < float(row["host syncs / step"]) < 1

    [loader] = section(report, "Loader alone")
    assert float(loader["loader crops/s"]) > 0 and float(loader["one process, one thread crops/s"]) > 0

    [predict] = section(report, "predict.py")
    assert predict["CT"] == "128x128x24" and float(predict["network s"]) > 0 and float(predict["peak RSS MB"]) > 0
    stages = ("reading s", "preprocessing s", "network s", "batching s", "post-processing s", "writing s", "other s")
    assert sum(float(predict[s]) for s in stages) == pytest.approx(float(predict["total s"]), rel=0.01)
    [labels] = (tmp_path / "data/infer").glob("out-predict-*/labels/*.nii*")  # predict really wrote the label map
    assert nib.load(labels).shape == nib.load(tmp_path / "data/infer/ct128/volume-24.nii.gz").shape

    [ddp] = section(report, "DDP")
    assert ddp["result"].startswith("skipped")


def test_cuda_without_a_gpu_is_one_error_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_module("benchmarks", "gpu", "--out", "report.md", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: --device=cuda")
    assert not (tmp_path / "report.md").exists()


def test_a_budget_too_small_runs_the_core_and_lists_what_it_skipped(tmp_path):
    result = run_module("benchmarks", "gpu", "--device", "cpu", "--quick", "--out", "report.md", "--data-dir", "data",
                     "--budget-s", "1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = (tmp_path / "report.md").read_text()
    assert section(report, "fp16 AMP smoke training")[0]["evaluable"] == "yes"  # the core: first light of the path
    assert [r["model"] for r in section(report, "Training throughput")] == ["unet_small"]  # the smallest row only
    skipped = [r["skipped"] for r in section(report, "Skipped to keep the budget")]
    assert skipped[0].startswith("throughput unet_small batch 2 channels_last=False")
    assert [s.split(" ")[0] for s in skipped[1:]] == ["Loader", "predict.py,", "DDP"]
    assert "## Loader" not in report and "## predict.py" not in report
    assert re.search(r"budget 1 s: used \d+ s, exceeded \(the core alone took longer\); skipped: 4", report)


def test_the_budget_scales_the_last_row_and_keeps_a_reserve(monkeypatch):
    from benchmarks import gpu_plan

    clock = [0.0]
    monkeypatch.setattr(gpu_plan.time, "perf_counter", lambda: clock[0])
    budget = gpu_plan.Budget(100.0, started=0.0)  # reserve for loader, predict and DDP: 30 s
    assert budget.allows_row("unet_small", 8, "first")  # the first row always runs
    clock[0] = 10.0
    budget.row_done(10.0, 8, "unet_small")
    assert budget.allows_row("unet_small", 16, "b16")  # ~20 s + 30 s reserve <= 90 s left
    clock[0] = 30.0
    budget.row_done(20.0, 16, "unet_small")
    assert not budget.allows_row("unet", 32, "unet b32")  # ~140 s: skipped
    assert budget.allows_section("loader", "loader") and budget.allows_section("predict", "predict")
    clock[0] = 95.0
    assert not budget.allows_section("ddp", "ddp")  # 7 s needed, 5 s left
    assert budget.skipped == ["unet b32", "ddp"] and budget.summary().startswith("budget 100 s: used 95 s, held")


def test_the_wheelhouse_holds_what_the_machine_lacks_and_the_command_installs_it_offline(tmp_path):
    result = run_cli("scripts/gpu_wheelhouse.py", "--dry-run", "--out", str(tmp_path / "wheels"), "--budget-s", "300",
                     cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    commands = result.stderr.strip().splitlines()
    assert "pip wheel --no-deps" in commands[0] and "monai==" in commands[0] and "hydra-core==" in commands[0]
    assert not any(f" {name}==" in line for line in commands for name in ("torch", "numpy", "scipy", "tqdm"))
    assert sum("--python-version" in line and "PyYAML==" in line for line in commands) == 4
    [device] = result.stdout.strip().splitlines()
    assert device.startswith(f"pip install --quiet --no-index --find-links {tmp_path / 'wheels'} monai nibabel")
    assert "python -m benchmarks gpu --budget-s 300" in device
