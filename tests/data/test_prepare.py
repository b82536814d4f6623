"""The data stage: patient-level splits and synthetic data generated on first use."""

import pytest
from omegaconf import OmegaConf

from lits.core.errors import LitsError
from lits.data.prepare import ensure_synthetic, prepare, split_cases


def test_split_is_patient_level_deterministic_and_complete():
    ids = [str(i) for i in range(40)]
    split = split_cases(ids, 0.15, 0.15, seed=0)
    assert split == split_cases(ids, 0.15, 0.15, seed=0)
    assert split != split_cases(ids, 0.15, 0.15, seed=1)
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (28, 6, 6)
    members = split["train"] + split["val"] + split["test"]
    assert sorted(members, key=int) == ids  # every case exactly once
    with pytest.raises(LitsError, match="too few"):
        split_cases(["0", "1"], 0.5, 0.5, seed=0)


def data_cfg(tmp_path, **synthetic):
    synth = {"num_cases": 4, "seed": 0, "size": 48, "num_slices": [16, 20], **synthetic}
    return OmegaConf.create(
        {
            "name": "synthetic",
            "root": str(tmp_path / "synth"),
            "cache_dir": str(tmp_path / "cache"),
            "window": [-200, 250],
            "split": {"val": 0.25, "test": 0.25},
            "synthetic": synth,
        }
    )


def test_synthetic_generated_once_then_reused(tmp_path):
    cfg = data_cfg(tmp_path)
    splits, cases = prepare(cfg, seed=0, progress=False)
    assert sorted(p.name for p in (tmp_path / "synth").glob("volume-*.nii.gz")) == [
        f"volume-{i}.nii.gz" for i in range(4)
    ]
    assert [len(cases[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    stamp = (tmp_path / "synth/volume-0.nii.gz").stat().st_mtime_ns
    prepare(cfg, seed=0, progress=False)
    assert (tmp_path / "synth/volume-0.nii.gz").stat().st_mtime_ns == stamp


def test_synthetic_settings_mismatch_is_refused(tmp_path):
    ensure_synthetic(data_cfg(tmp_path))
    with pytest.raises(LitsError, match="generated with other synthetic settings \\(max_tumors\\)"):
        ensure_synthetic(data_cfg(tmp_path, max_tumors=2))
    with pytest.raises(LitsError, match="unknown generator setting"):
        ensure_synthetic(data_cfg(tmp_path, tumour_count=2))
