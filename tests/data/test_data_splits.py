"""Splits: seeded fractions (unchanged), explicit lists, JSON split files, k-fold cross-validation."""

import json

import pytest
from omegaconf import OmegaConf

from lits.core.errors import LitsError
from lits.data.splits import make_splits, split_cases

IDS = [str(i) for i in range(20)]


def cfg(split=None, **data):
    return OmegaConf.create(
        {
            "split": split
            if split is not None
            else {"val": 0.15, "test": 0.15, "train": None, "seed": None, "file": None},
            "fold": None,
            "num_folds": 5,
            **data,
        }
    )


def members(splits):
    return [c for name in ("train", "val", "test") for c in splits[name]]


def test_default_fractions_are_the_original_seeded_split():
    assert make_splits(IDS, cfg(), seed=3) == split_cases(IDS, 0.15, 0.15, seed=3)
    assert make_splits(IDS, cfg({"val": 0.15, "test": 0.15, "seed": 3}), seed=99) == split_cases(
        IDS, 0.15, 0.15, seed=3
    )


def test_explicit_lists_and_mixtures():
    s = make_splits(IDS, cfg({"val": [1, 2], "test": ["liver_3", "volume-4"], "train": None}), seed=0)
    assert s["val"] == ["1", "2"] and s["test"] == ["3", "4"] and sorted(members(s), key=int) == IDS
    s = make_splits(IDS, cfg({"val": 0.1, "test": [0, 19], "train": None}), seed=0)
    assert s["test"] == ["0", "19"] and len(s["val"]) == 2 and not set(s["val"]) & {"0", "19"}
    assert sorted(members(s), key=int) == IDS
    s = make_splits(IDS, cfg({"val": [5], "test": [6], "train": [7, 8, 9]}), seed=0)
    assert s == {"train": ["7", "8", "9"], "val": ["5"], "test": ["6"]}  # unlisted cases are unused


@pytest.mark.parametrize(
    "split, message",
    [
        ({"val": [1, 99]}, r"data.split.val: case ids \['99'\] are not in the data"),
        ({"val": [1], "test": [1]}, "case 1 is in both"),
        ({"val": [1, 1]}, "listed twice"),
        ({"val": 1.5}, "give a fraction in"),
        ({"val": [1], "train": []}, "the train split is empty"),
        ({"colour": 1}, "data.split.colour: unknown key"),
    ],
)
def test_bad_split_settings(split, message):
    with pytest.raises(LitsError, match=message):
        make_splits(IDS, cfg({"val": 0.15, "test": 0.15, **split}), seed=0)


def test_folds_partition_the_non_test_cases():
    folds = [make_splits(IDS, cfg(fold=k, num_folds=4), seed=1) for k in range(4)]
    tests = {tuple(f["test"]) for f in folds}
    assert len(tests) == 1 and len(folds[0]["test"]) == 3  # the same held-out test set for every fold
    vals = [set(f["val"]) for f in folds]
    rest = set(IDS) - set(folds[0]["test"])
    assert set().union(*vals) == rest and sum(len(v) for v in vals) == len(rest)  # each case validates exactly once
    for f in folds:
        assert set(f["train"]) == rest - set(f["val"]) and sorted(members(f), key=int) == IDS
    assert make_splits(IDS, cfg(fold=2, num_folds=4), seed=1) == folds[2]  # deterministic
    assert make_splits(IDS, cfg(fold=2, num_folds=4), seed=2) != folds[2]
    cv_only = make_splits(IDS, cfg({"val": 0.15, "test": 0, "train": None}, fold=0, num_folds=5), seed=0)
    assert cv_only["test"] == [] and len(cv_only["val"]) == 4


@pytest.mark.parametrize(
    "data, message",
    [
        ({"fold": 5, "num_folds": 5}, r"data.fold=5: give an integer in 0..4"),
        ({"fold": 0, "num_folds": 1}, "data.num_folds=1: give an integer >= 2"),
        ({"fold": 0, "num_folds": 30}, "cannot make data.num_folds=30 folds"),
    ],
)
def test_bad_fold_settings(data, message):
    with pytest.raises(LitsError, match=message):
        make_splits(IDS, cfg(**data), seed=0)
    with pytest.raises(LitsError, match="the fold is the validation set"):
        make_splits(IDS, cfg({"val": [1]}, fold=0), seed=0)


def test_split_files(tmp_path):
    ours = tmp_path / "split.json"  # what train.py writes to the run dir
    ours.write_text(json.dumps({"train": ["0", "1", "2"], "val": ["3"], "test": ["4"]}))
    assert make_splits(IDS, cfg(str(ours)), seed=0) == {"train": ["0", "1", "2"], "val": ["3"], "test": ["4"]}
    assert make_splits(IDS, cfg({"file": str(ours), "val": 0.5}), seed=0)["val"] == ["3"]  # the file decides
    no_train = tmp_path / "paper.json"
    no_train.write_text(json.dumps({"val": [0, 1], "test": [2, 3]}))
    s = make_splits(IDS, cfg(str(no_train)), seed=0)
    assert s["train"] == [str(i) for i in range(4, 20)]

    nnunet = tmp_path / "splits_final.json"  # nnU-Net: a list of folds, file-style ids
    nnunet.write_text(
        json.dumps(
            [
                {"train": [f"liver_{i}" for i in range(10)], "val": [f"liver_{i}" for i in range(10, 20)]},
                {"train": [f"liver_{i}" for i in range(10, 20)], "val": [f"liver_{i}" for i in range(10)]},
            ]
        )
    )
    s = make_splits(IDS, cfg(str(nnunet), fold=1), seed=0)
    assert s["val"] == [str(i) for i in range(10)] and s["test"] == []
    with pytest.raises(LitsError, match=r"holds 2 folds; choose one with data.fold=0..1"):
        make_splits(IDS, cfg(str(nnunet)), seed=0)

    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"test": [0, 1], "folds": [[2, 3, 4], [5, 6, 7], [8, 9]]}))
    s = make_splits(IDS, cfg(str(folds), fold=2), seed=0)
    assert s == {"train": ["2", "3", "4", "5", "6", "7"], "val": ["8", "9"], "test": ["0", "1"]}

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LitsError, match="bad.json: not a readable JSON split file"):
        make_splits(IDS, cfg(str(bad)), seed=0)
    bad.write_text(json.dumps({"train": [0], "val": [42]}))
    with pytest.raises(LitsError, match=r"bad.json val: case ids \['42'\] are not in the data"):
        make_splits(IDS, cfg(str(bad)), seed=0)
    with pytest.raises(LitsError, match="split file not found"):
        make_splits(IDS, cfg(str(tmp_path / "missing.json")), seed=0)
