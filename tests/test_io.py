"""Atomic writing: nothing half-written under a final name, normal file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from tmstarget.io.files import atomic_path, write_json


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "sub-01_map.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json({"a": 1}, tmp_path / "x.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text().strip().startswith("{")
