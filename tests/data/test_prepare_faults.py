"""Preparation under faults: a SIGKILLed preparer leaves no lock behind and no worker alive (the rerun builds the same
cache as a clean run), SIGTERM / SIGINT stop a preparing trainer promptly with 143 / 130 keeping finished cases, and
a process waiting for a live lock holder can be stopped, or gives up with one line when the holder makes no progress."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, WINDOW, big_tree, prepare_args, prepare_cmd, run_cli

from lits.data.cache import cache_key
from lits.data.cache_lock import TEMP_MARKER

pytestmark = pytest.mark.slow  # preparers and trainers in child processes


def alive(pid: int) -> bool:
    """A process that runs (a zombie waiting to be reaped counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def worker_pids(folder) -> set[int]:
    """The writers of the temporary case folders in `folder` (their names carry the pid: .<case>.tmp-<host>-<pid>-)."""
    return {int(p.name.split(TEMP_MARKER)[1].rsplit("-", 2)[1]) for p in folder.iterdir() if TEMP_MARKER in p.name}


def wait_for_work_in_progress(proc, folder, done_at_least=1, timeout=120) -> set[int]:
    """Poll until `done_at_least` cases are published and a worker is writing another; its writers' pids."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if folder.exists():
            done = [p for p in folder.iterdir() if p.name.isdigit()]
            pids = worker_pids(folder)
            if len(done) >= done_at_least and pids:
                return pids
        time.sleep(0.005)
    raise AssertionError(f"no work in progress seen (rc {proc.poll()})")


def assert_gone(pids, timeout=15) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "preprocessing workers outlived their parent"


def cases_of(folder) -> dict:
    return {p.name: p for p in folder.iterdir() if p.name.isdigit()}


def test_sigkill_mid_preparation_frees_the_lock_and_the_rerun_equals_a_clean_build(tmp_path):
    root, cache = big_tree(tmp_path / "LiTS", 12), tmp_path / "cache"
    folder = cache / cache_key(WINDOW, root)
    proc = subprocess.Popen(
        prepare_cmd(root, cache, workers=2), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    workers = wait_for_work_in_progress(proc, folder)
    assert proc.pid not in workers  # the workers write, the parent waits
    proc.kill()  # the parent alone, as the OOM killer or `kill -9 <pid>` would
    proc.wait()
    assert_gone(workers)

    started = time.time()
    result = run_cli(
        "scripts/prepare_data.py", *prepare_args(root, cache, workers=2), "data.lock_timeout_min=2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "waiting for" not in result.stderr and time.time() - started < 120  # nothing held the lock
    clean_cache = tmp_path / "clean"
    assert run_cli("scripts/prepare_data.py", *prepare_args(root, clean_cache), cwd=tmp_path).returncode == 0
    resumed, clean = cases_of(folder), cases_of(clean_cache / cache_key(WINDOW, root))
    assert sorted(resumed) == sorted(clean) == sorted(str(i) for i in range(12))
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    for case, path in resumed.items():
        for name in ("image.npy", "label.npy"):
            assert np.array_equal(np.load(path / name), np.load(clean[case] / name)), (case, name)


def trainer_on(root, cache, *overrides):
    """train.py preparing a LiTS tree with two preprocessing workers (a smoke network afterwards)."""
    args = ["debug=smoke", "data=lits", f"data.root={root}", f"data.cache_dir={cache}", "data.synthetic=null"]
    args += ["data.prepare_workers=2", "trainer.progress=false", "hydra.run.dir=run", *overrides]
    return [sys.executable, str(REPO / "train.py"), *args]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_during_preparation_stops_promptly_and_keeps_finished_cases(tmp_path, sig, code):
    root, cache = big_tree(tmp_path / "LiTS", 12), tmp_path / "cache"
    folder = cache / cache_key(WINDOW, root)
    proc = subprocess.Popen(
        trainer_on(root, cache), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    workers = wait_for_work_in_progress(proc, folder)
    proc.send_signal(sig)
    sent = time.time()
    out, err = proc.communicate(timeout=60)
    print(f"{sig.name}: exited {proc.returncode} {time.time() - sent:.1f} s after the signal")
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in out + err and f"stopped by {sig.name} before training" in err
    assert_gone(workers)
    finished = cases_of(folder)
    assert 1 <= len(finished) < 12 and all((p / "meta.json").is_file() for p in finished.values())
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def hold_lock(folder):
    """Take <folder>/.lock in this process, as a live preparer elsewhere would."""
    import fcntl

    folder.mkdir(parents=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"process {os.getpid()} on the-test\n".encode())
    return fd


def test_a_live_holder_without_progress_times_out_and_a_waiting_trainer_can_be_stopped(tmp_path):
    root, cache = big_tree(tmp_path / "LiTS", 3), tmp_path / "cache"
    fd = hold_lock(cache / cache_key(WINDOW, root))
    try:
        result = run_cli(
            "scripts/prepare_data.py", *prepare_args(root, cache), "data.lock_timeout_min=0.05", cwd=tmp_path
        )
        assert result.returncode == 2, result.stderr[-2000:]
        warning, line = result.stderr.strip().splitlines()  # the wait announced, then one error line
        assert warning.startswith("WARNING waiting for process") and line.startswith("error: "), result.stderr
        assert f"waited 0.05 min for process {os.getpid()} on the-test preparing this cache" in line, line
        assert "raise data.lock_timeout_min" in line

        log = tmp_path / "trainer.err"
        with open(log, "w") as err:
            proc = subprocess.Popen(trainer_on(root, cache), cwd=tmp_path, stdout=err, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while "waiting for process" not in log.read_text() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert f"waiting for process {os.getpid()} on the-test" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143, log.read_text()[-2000:]
        assert "Traceback" not in log.read_text()
    finally:
        os.close(fd)
