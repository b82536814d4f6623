"""scripts/gpu_check.py stays runnable: its CPU mode (--device cpu --quick) runs the same code paths as the GPU check
on tiny sizes and writes the markdown report."""

import re

import nibabel as nib
import pytest
import torch
from conftest import run_cli

pytestmark = pytest.mark.slow


def section(report: str, title: str) -> list[dict]:
    """The rows of the markdown table under the `## title ...` heading."""
    block = report.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith("|")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(columns, (c.strip() for c in line.strip("|").split("|")))) for line in lines[2:]]


def test_quick_cpu_check_writes_every_section(tmp_path):
    result = run_cli(
        "scripts/gpu_check.py", "--device", "cpu", "--quick", "--out", "report.md", "--data-dir", "data", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = (tmp_path / "report.md").read_text()
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
    result = run_cli("scripts/gpu_check.py", "--out", "report.md", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().startswith("error: --device=cuda")
    assert not (tmp_path / "report.md").exists()
