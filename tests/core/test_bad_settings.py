"""Bad numeric settings and unwritable run folders are refused at start-up through the real entry points: one
`error:` line naming the key, exit code 2, and nothing written (Hydra's run folder is not even created)."""

import json
import subprocess
import sys
import time

import pytest
from conftest import REPO, one_line_error, run_cli, train_args

pytestmark = pytest.mark.slow  # each case starts an entry point in a child process

BAD_SETTINGS = [
    ("train.py", "trainer.max_epochs=abc", "trainer.max_epochs=abc"),
    ("train.py", "trainer.batch_size=-4", "trainer.batch_size=-4: give an integer >= 1"),
    ("train.py", "trainer.batch_size=0", "trainer.batch_size=0: give an integer >= 1"),
    ("train.py", "trainer.batch_size=2.5", "trainer.batch_size=2.5"),
    ("train.py", "data.crop_size=0", "data.crop_size=0: give an integer >= 16"),
    ("train.py", "data.crop_size=65", "data.crop_size=65: give a multiple of 16"),
    ("train.py", "data.crop_size=72", "data.crop_size=72: give a multiple of 16, the total stride of model.arch=unet"),
    ("train.py", "trainer.max_epochs=0", "trainer.max_epochs=0: give an integer >= 1"),
    ("train.py", "trainer.max_epochs=-1", "trainer.max_epochs=-1: give an integer >= 1"),
    ("train.py", "trainer.val_every=0", "trainer.val_every=0: give an integer >= 1"),
    ("train.py", "optim.lr=-1", "optim.lr=-1.0: give a finite number > 0"),
    ("evaluate.py", "batch_size=0", "batch_size=0: give an integer >= 1"),
    ("predict.py", "batch_size=-2", "batch_size=-2: give an integer >= 1"),
]


@pytest.mark.parametrize(("script", "override", "message"), BAD_SETTINGS, ids=[b[1] for b in BAD_SETTINGS])
def test_bad_setting_is_one_line_exit_2_and_nothing_written(tmp_path, script, override, message):
    required = {"train.py": [], "evaluate.py": ["ckpt=best.pt"], "predict.py": ["ckpt=a.pt", "input=b", "output=c"]}
    result = run_cli(script, *required[script], override, "hydra.run.dir=run", cwd=tmp_path, timeout=120)
    line = one_line_error(result)
    assert message in line, line
    assert "fix it in the config" in line or "could not be converted to" in line, line  # says what to do
    assert not list(tmp_path.iterdir()), "nothing may be written for a refused setting"


def test_unwritable_run_folder_is_one_line_before_anything_runs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli("train.py", "debug=smoke", f"hydra.run.dir={blocker}/run", cwd=tmp_path, timeout=120)
    line = one_line_error(result)
    assert f"{blocker}/run: cannot write the run folder here (a file is in the way" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no synthetic data generated, no outputs/


def test_a_run_without_validation_cases_is_refused_at_start_up(tmp_path):
    args = ("debug=smoke", "data.split.val=0", "trainer.progress=false", "hydra.run.dir=run")
    result = run_cli("train.py", *args, cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]  # after the phantom generator's progress bar
    assert "no validation cases (data.split.val=0, after data.on_error=fail)" in line, line
    assert "e.g. data.split.val=0.2" in line
    assert not (tmp_path / "run").exists()  # refused at start-up: no run folder left behind


def test_a_second_training_into_a_running_run_folder_is_refused_naming_the_first(tmp_path):
    args = [str(REPO / "train.py"), *train_args("shared", "trainer.max_epochs=4")]
    first = subprocess.Popen([sys.executable, *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    lock = tmp_path / "outputs/shared/.lock"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    second = run_cli("train.py", *train_args("shared"), cwd=tmp_path, timeout=300)
    assert first.wait(timeout=600) == 0, first.stderr.read()[-2000:]
    line = one_line_error(second)
    assert f"outputs/shared: process {first.pid} on " in line and "is writing this run folder" in line, line
    assert "choose another hydra.run.dir" in line
    epochs = [json.loads(r)["epoch"] for r in (tmp_path / "outputs/shared/history.jsonl").read_text().splitlines()]
    assert epochs == sorted(epochs) and epochs[-1] == 4  # one run's record, not two interleaved


def test_resuming_with_another_optimizer_is_refused_and_the_run_record_kept(tmp_path):
    first = run_cli("train.py", *train_args("a"), cwd=tmp_path, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    record = {p.name: p.read_bytes() for p in (tmp_path / "outputs/a/.hydra").iterdir()}
    checkpoints = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "outputs/a/checkpoints").iterdir()}
    again = run_cli("train.py", *train_args("a", "optim=sgd", "trainer.max_epochs=3"), cwd=tmp_path, timeout=300)
    line = one_line_error(again)
    assert "last.pt: trained with optim.name=adamw, resumed with optim.name=sgd" in line, line
    assert "resume with optim.name=adamw, or start a new run" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "outputs/a/.hydra").iterdir()} == record  # as it was
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "outputs/a/checkpoints").iterdir()} == checkpoints
