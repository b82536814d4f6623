"""Checkpoints: atomic writes (a kill mid-write keeps the previous last.pt), weights_only loading, resume lookup,
the incompatible-network refusal, and RNG states that survive a weights_only round trip."""

import os
import random
import textwrap

import numpy as np
import pytest
import torch
from conftest import REPO, run_python

from lits.core.errors import LitsError
from lits.infer.checkpoint import load_checkpoint, save_checkpoint
from lits.train.checkpoint import (
    check_compatible,
    remove_stale_temps,
    resume_path,
    rng_state,
    set_rng_state,
)


def state(value: float) -> dict:
    return {
        "model": {"w": torch.full((4, 4), value)},
        "config": {"model": {"arch": "unet", "channels": [8, 16]}},
        "epoch": int(value),
    }


# The child saves the previous checkpoint, then dies by SIGKILL in the middle of the next save: either while torch.save
# is writing bytes into the temp file, or after the temp file is complete but before the rename.
CHILD = textwrap.dedent("""
    import os, signal, sys, torch
    import lits.infer.checkpoint as ck
    path, where = sys.argv[1], sys.argv[2]
    ck.save_checkpoint({"model": {"w": torch.full((4, 4), 1.0)}, "config": {}, "epoch": 1}, path)
    die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    if where == "write":
        real_save = torch.save
        def torn_save(obj, f, *a, **k):
            f.write(b"PK\\x03\\x04" + b"\\0" * 4096)  # the start of a zip archive, then death
            f.flush()
            die()
        torch.save = torn_save
    else:
        os.replace = die
    ck.save_checkpoint({"model": {"w": torch.full((4, 4), 2.0)}, "config": {}, "epoch": 2}, path)
    print("not killed")
""")


@pytest.mark.parametrize("where", ["write", "rename"])
def test_kill_during_checkpoint_write_keeps_previous_last_pt(tmp_path, where):
    path = tmp_path / "checkpoints" / "last.pt"
    result = run_python("-c", CHILD, path, where, cwd=REPO, timeout=120)
    assert result.returncode == -9, result.stderr[-2000:]
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.full((4, 4), 1.0))
    stale = sorted(p.name for p in path.parent.iterdir() if p.name != "last.pt")
    assert len(stale) == 1 and stale[0].startswith(".last.pt.")  # the killed write's temp file, never last.pt itself
    assert remove_stale_temps(path.parent) and sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_failed_save_leaves_no_temp_and_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(state(1.0), tmp_path / "last.pt")

    def broken(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        save_checkpoint(state(2.0), path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"] and load_checkpoint(path)["epoch"] == 1


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_weights_only_refuses_a_checkpoint_that_would_run_code(tmp_path):
    torch.save({"model": {}, "config": {}, "payload": Boom()}, tmp_path / "evil.pt")
    with pytest.raises(LitsError, match="not a readable lits checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists() and not (REPO / "pwned").exists()


def test_resume_path(tmp_path):
    run = tmp_path / "run"
    assert resume_path("auto", run) is None and resume_path(None, run) is None  # nothing there yet: fresh start
    last = save_checkpoint(state(1.0), run / "checkpoints" / "last.pt")
    assert resume_path("auto", run) == last
    assert resume_path(str(run), tmp_path / "elsewhere") == last  # a run folder
    assert resume_path(str(last), tmp_path / "elsewhere") == last  # a file
    with pytest.raises(LitsError, match="already holds a training run; continue it with trainer.resume=auto"):
        resume_path(None, run)
    with pytest.raises(LitsError, match="not found"):
        resume_path(str(tmp_path / "missing.pt"), run)


def test_incompatible_network_is_refused_with_the_differences(tmp_path):
    saved = {
        "config": {
            "model": {"arch": "unet", "channels": [8, 16], "output_prior": [0.1, 0.01]},
            "data": {"context_slices": 0},
            "optim": {"name": "adamw", "schedule": "cosine", "lr": 1e-3},
        }
    }
    same_net = {
        "model": {"arch": "unet", "channels": [8, 16], "output_prior": [0.2, 0.02]},
        "data": {"context_slices": 0},
        "optim": {"name": "adamw", "schedule": "cosine", "lr": 3e-4},  # a new learning rate resumes
    }
    check_compatible(saved, same_net, "last.pt")  # the initial bias is not part of the network's shape
    with pytest.raises(
        LitsError, match=r"last.pt: checkpoint of a different network \(model.channels: \[8, 16\] -> \[8, 32\]\)"
    ):
        check_compatible(saved, {**same_net, "model": {**same_net["model"], "channels": [8, 32]}}, "last.pt")
    with pytest.raises(LitsError, match="context_slices: 0 -> 2"):
        check_compatible(saved, {**same_net, "data": {"context_slices": 2}}, "last.pt")
    for key, value in (("name", "sgd"), ("schedule", "poly")):
        other = {**same_net, "optim": {**same_net["optim"], key: value}}
        with pytest.raises(
            LitsError, match=rf"last.pt: trained with optim.{key}=\w+, resumed with optim.{key}={value}"
        ):
            check_compatible(saved, other, "last.pt")


def draws(generator):
    return (random.random(), float(np.random.rand()), torch.rand(1).item(), torch.rand(1, generator=generator).item())


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    generator = torch.Generator().manual_seed(3)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    draws(generator)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    save_checkpoint(
        {"model": {}, "config": {}, "rng": rng_state(torch.device("cpu"), {"augment": generator})}, tmp_path / "rng.pt"
    )
    expected = draws(generator)
    draws(generator)
    restored = load_checkpoint(tmp_path / "rng.pt")["rng"]
    set_rng_state(restored, torch.device("cpu"), {"augment": generator})
    assert draws(generator) == expected


def with_best(value: float, epoch: int) -> dict:
    return {**state(float(epoch)), "best": {"metric": "val/tumor_dice_post", "value": value, "epoch": epoch}}


def test_resume_counts_the_best_from_what_best_pt_holds(tmp_path):
    from lits.train.checkpoint import reconcile_best

    folder = tmp_path / "run" / "checkpoints"
    last = save_checkpoint(with_best(0.5, 3), folder / "last.pt")
    save_checkpoint(with_best(0.5, 3), folder / "best.pt")
    saved = load_checkpoint(last)
    assert reconcile_best(saved, folder, last) is None and saved["best"]["epoch"] == 3  # the pair agrees

    save_checkpoint(with_best(0.6, 4), folder / "best.pt")  # killed after best.pt, before last.pt recorded it
    assert reconcile_best(saved, folder, last) is None and saved["best"] == with_best(0.6, 4)["best"]

    save_checkpoint(with_best(0.4, 1), folder / "best.pt")  # behind (removed by hand, or an older lits' order)
    saved = load_checkpoint(last)
    message = reconcile_best(saved, folder, last)
    assert (
        "holds epoch 1" in message and "records the best at epoch 3 (0.5000), whose weights are lost" in message
    )  # epochs from 1
    assert saved["best"] == with_best(0.4, 1)["best"]

    (folder / "best.pt").unlink()
    saved = load_checkpoint(last)
    assert "missing or unreadable" in reconcile_best(saved, folder, last)
    assert saved["best"]["epoch"] == 0 and saved["best"]["value"] == float("-inf")  # no best yet (epochs from 1)


def test_resume_into_a_new_folder_takes_best_pt_along_and_a_fresh_start_drops_an_orphan(tmp_path):
    from lits.train.checkpoint import reconcile_best

    old = tmp_path / "old" / "checkpoints"
    last = save_checkpoint(with_best(0.5, 3), old / "last.pt")
    save_checkpoint(with_best(0.5, 3), old / "best.pt")
    new = tmp_path / "new" / "checkpoints"
    saved = load_checkpoint(last)
    assert reconcile_best(saved, new, last) is None
    assert load_checkpoint(new / "best.pt")["best"] == saved["best"] == with_best(0.5, 3)["best"]

    orphan = save_checkpoint(with_best(0.2, 0), tmp_path / "killed" / "checkpoints" / "best.pt")
    assert "killed before its first last.pt" in reconcile_best(None, orphan.parent, None) and not orphan.exists()
