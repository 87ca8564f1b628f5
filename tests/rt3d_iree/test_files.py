"""Atomic writes: whole files or none, with the permissions any new file gets."""

from __future__ import annotations

import os
import stat

import pytest

from rt3d_iree.files import atomic_write


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_get_umask_permissions_and_scripts_are_executable(tmp_path, umask_022):
    data = atomic_write(tmp_path / "out" / "table.md", "x")
    script = atomic_write(tmp_path / "command.sh", "#!/bin/sh\ntrue\n", executable=True)
    assert stat.S_IMODE(data.stat().st_mode) == 0o644
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "a.json", "old")
    with pytest.raises(TypeError):
        atomic_write(path, 3)  # not bytes or str
    assert path.read_text() == "old" and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
