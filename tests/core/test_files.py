"""The one atomic-write mechanism every report, export and checkpoint goes through."""

import os

import pytest

from lits.core.files import FILE_MODE, atomic_path, write_bytes_atomic


def test_success_replaces_target_with_plain_permissions(tmp_path):
    target = tmp_path / "sub" / "out.nii.gz"
    with atomic_path(target, ".nii.gz") as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".nii.gz") and tmp.name.startswith(".out.nii.gz.")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert os.stat(target).st_mode & 0o777 == FILE_MODE
    assert [p.name for p in target.parent.iterdir()] == ["out.nii.gz"]


def test_failure_leaves_old_file_and_no_temp(tmp_path):
    target = write_bytes_atomic(tmp_path / "metrics.json", b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
