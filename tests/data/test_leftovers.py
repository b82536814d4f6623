"""What killed runs leave, and who may read what they write: a generator SIGKILLed mid-way leaves a hidden temporary
folder that the next generation removes (a live generator's, or another host's, is left alone); cache and synthetic
folders get the umask's mode, so a shared data.cache_dir is readable by others."""

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, build_cache, find_lits_pairs

from lits.data.cache import cache_key
from lits.data.synthetic import SyntheticParams, generate_dataset

TINY = SyntheticParams(size=64, num_slices=(16, 20))

GENERATE = textwrap.dedent("""
    import sys
    from lits.data.synthetic import SyntheticParams, generate_dataset
    generate_dataset(sys.argv[1], 40, params=SyntheticParams(size=64, num_slices=(16, 20)), progress=False)
""")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


@pytest.mark.slow
def test_generation_killed_midway_leaves_a_temp_folder_that_the_next_run_removes(tmp_path):
    root = tmp_path / "synth"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", GENERATE, str(root)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".synth.tmp-*/volume-1.nii.gz")):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    [leftover] = list(tmp_path.glob(".synth.tmp-*"))
    assert f"-{socket.gethostname()}-{proc.pid}-" in leftover.name and not root.exists()

    generate_dataset(root, 2, params=TINY, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]


def test_only_dead_generators_leftovers_of_this_host_are_removed(tmp_path):
    host = socket.gethostname()
    dead = tmp_path / f".synth.tmp-{host}-{dead_pid()}-abc123"
    live = tmp_path / f".synth.tmp-{host}-{os.getpid()}-def456"  # a generator still at work (this process)
    other = tmp_path / ".synth.tmp-elsewhere-1-ghi789"  # another machine's, on a shared folder
    for folder in (dead, live, other):
        folder.mkdir()
    generate_dataset(tmp_path / "synth", 1, params=TINY, progress=False)
    assert not dead.exists() and live.exists() and other.exists()


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cache_and_synthetic_folders_follow_the_umask(lits_tree, tmp_path, umask_022):
    build_cache(find_lits_pairs(lits_tree), tmp_path / "cache", (-200, 250), lits_tree, progress=False)
    key = tmp_path / "cache" / cache_key((-200, 250), lits_tree)
    assert mode(key) == 0o755
    for case in (p for p in key.iterdir() if p.is_dir()):
        assert mode(case) == 0o755, case  # not mkdtemp's 0700
        assert all(mode(f) == 0o644 for f in case.iterdir()), case
    root = generate_dataset(tmp_path / "synth", 1, params=TINY, progress=False)
    assert mode(root) == 0o755 and all(mode(f) == 0o644 for f in root.iterdir())
