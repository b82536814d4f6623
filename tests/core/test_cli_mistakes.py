"""What a new user types wrong on the command line ends in one line that says what to type instead, and exit 2 (or
130 for Ctrl-C): train's data.root on evaluate, a run folder as ckpt=, Ctrl-C while the task loads."""

import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, evaluate_cfg, make_checkpoint, one_line_error, run_cli, write_phantom_tree

import lits.evaluate.scoring
from lits.core.errors import LitsError


@pytest.mark.slow
def test_evaluate_with_trains_data_root_says_what_to_pass(tmp_path):
    result = run_cli("evaluate.py", "ckpt=best.pt", "data.root=/data/LiTS", cwd=tmp_path, timeout=120)
    line = one_line_error(result)
    assert line.startswith("error: data.root=/data/LiTS: data is not selected on this command;"), line
    assert "data_root=DIR if they moved" in line and "data=lits (or msd, csv) data.root=DIR" in line
    assert not list(tmp_path.iterdir())


def test_a_run_folder_as_ckpt_means_its_best_checkpoint(tmp_path):
    root = write_phantom_tree(tmp_path / "lits", cases=(0,))
    ckpt = make_checkpoint(tmp_path, root, test_ids=("0",))
    run_folder = ckpt.parent.parent
    cfg = evaluate_cfg(tmp_path, f"ckpt={run_folder}", "report.montages=false", "report.plot=false",
                       "detection_curve=false", "ablation=false")  # fmt: skip
    result = lits.evaluate.scoring.evaluate(cfg)
    assert result["ckpt"] == str(ckpt.resolve()) and result["headline"].startswith("test split, best.pt (epoch 4)")
    ckpt.rename(ckpt.with_name("last.pt"))
    with pytest.raises(LitsError, match="a folder without checkpoints/best.pt; pass ckpt=<run>/checkpoints/best.pt"):
        lits.evaluate.scoring.evaluate(evaluate_cfg(tmp_path, f"ckpt={run_folder}", out="eval2"))


@pytest.mark.slow
def test_ctrl_c_while_the_task_loads_is_one_line_not_a_traceback(tmp_path):
    child = subprocess.Popen([sys.executable, str(REPO / "train.py"), "debug=smoke", "hydra.run.dir=run"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    time.sleep(1.5)  # Hydra has composed the config; torch is loading (or the run is preparing its data)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-2000:]
    assert "stopped by SIGINT" in stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "override", "expected"),
    [
        ("train.py", "trainer.max_epoch=3", "did you mean trainer.max_epochs?"),
        ("train.py", "max_epochs=3", "did you mean trainer.max_epochs?"),
        ("train.py", "data.crop=64", "did you mean data.crop_size?"),
        ("evaluate.py", "postprocess.thresold=0.4", "did you mean postprocess.threshold?"),
        ("train.py", "experiment=progresive", "experiment=progresive: no such experiment in configs/experiment/; "
         "choose one of bce, dice, dice_ce, focal, generalized_dice, hybrid, log_dice, progressive "
         "(did you mean progressive?)"),
    ],
)  # fmt: skip
def test_a_misspelled_key_or_option_gets_the_right_one(tmp_path, script, override, expected):
    line = one_line_error(run_cli(script, override, "ckpt=x" if script == "evaluate.py" else "debug=smoke",
                                  cwd=tmp_path, timeout=120))  # fmt: skip
    assert line.endswith(expected), line
    assert "Config search path" not in line and "provider=" not in line
    assert not list(tmp_path.iterdir())


def test_did_you_mean_looks_in_the_tasks_schema():
    from lits.core.cli import did_you_mean, schema_keys

    keys = schema_keys("train")
    assert {"trainer.max_epochs", "data.crop_size", "data.sampling.per_lesion", "loss.schedule.kind"} <= set(keys)
    assert did_you_mean("data.sampling.per_lesions", keys) == "data.sampling.per_lesion"
    assert did_you_mean("completely_unrelated", keys) is None
