"""Where results go: read-only places are refused before any work (the run folder of train / evaluate, predict's
output=), and a full disk ends a run with one line naming the file, leaving nothing half-written. The read-only and
full file systems are real: small tmpfs mounts (the tests are skipped where mounting is not allowed)."""

import subprocess

import pytest
from conftest import big_tree, make_checkpoint, one_line_error, prepare_args, run_cli, write_phantom_tree

pytestmark = pytest.mark.slow  # entry points in child processes


@pytest.fixture
def mount(tmp_path):
    """mount(name, options): a fresh tmpfs at tmp_path/name (e.g. "ro,size=1m" or "size=200k"), unmounted after."""
    points = []

    def make(name: str, options: str):
        point = tmp_path / name
        point.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if result.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        points.append(point)
        return point

    yield make
    for point in points:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture
def checkpoint(tmp_path):
    root = write_phantom_tree(tmp_path / "lits", cases=(0, 1))
    return root, make_checkpoint(tmp_path, root, test_ids=("0", "1"))


def test_read_only_places_are_refused_before_any_work(tmp_path, mount, checkpoint):
    root, ckpt = checkpoint
    read_only = mount("ro", "ro,size=1m")
    runs = {
        "train.py": ["debug=smoke", f"hydra.run.dir={read_only}/run"],
        "evaluate.py": [f"ckpt={ckpt}", f"hydra.run.dir={read_only}/eval"],
    }
    for script, args in runs.items():
        line = one_line_error(run_cli(script, *args, cwd=tmp_path, timeout=120))
        assert f"cannot write the run folder here (Read-only file system at {read_only})" in line, line
    assert not (tmp_path / "data").exists()  # train did not even generate its data

    args = [f"ckpt={ckpt}", f"input={root}", f"output={read_only}/labels", "hydra.run.dir=run"]
    line = one_line_error(run_cli("predict.py", *args, cwd=tmp_path, timeout=120))
    assert f"{read_only}/labels: cannot write the label maps here (Read-only file system" in line, line
    assert "choose a writable output=DIR" in line


def test_full_disk_is_one_line_naming_the_file_and_nothing_half_written(tmp_path, mount, checkpoint):
    root, ckpt = checkpoint
    labels = mount("labels", "size=8k")  # smaller than one label map
    # naming=lits: the uncompressed LiTS submission file, larger than the mount (a .nii.gz label map would fit)
    args = [f"ckpt={ckpt}", f"input={root}/volume-0.nii.gz", f"output={labels}", "naming=lits", "progress=false"]
    line = one_line_error(run_cli("predict.py", *args, cwd=tmp_path, timeout=120))
    assert f"{labels}/test-segmentation-0.nii: cannot write it (no space left on" in line.lower(), line
    assert not list(labels.iterdir())  # not even the temp file

    run = mount("train-run", "size=200k")  # the run's logs fit, its first checkpoint (last.pt, ~220 kB) does not
    result = run_cli("train.py", "debug=smoke", "trainer.progress=false", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]  # after the synthetic data's progress bar
    assert f"error: {run}/checkpoints/last.pt: cannot write it (no space left on" in line.lower(), line
    assert [p.name for p in (run / "checkpoints").iterdir()] == []

    cache = mount("cache", "size=5m")  # two of the six cases (2.4 MB each) fit
    source = big_tree(tmp_path / "big", 6)
    result = run_cli("scripts/prepare_data.py", *prepare_args(source, cache), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]  # after the progress bar
    assert "cannot write the preprocessing cache (No space left on device)" in line, line
    [key] = list(cache.iterdir())
    leftovers = [p.name for p in key.iterdir() if p.name.startswith(".") and p.name != ".lock"]
    done = [p for p in key.iterdir() if not p.name.startswith(".")]
    assert not leftovers and len(done) == 2 and all((p / "meta.json").is_file() for p in done)
