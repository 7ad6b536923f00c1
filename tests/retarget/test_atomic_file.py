"""Files are written whole or not at all, with ordinary permissions."""

import os

import pytest

from dimitra.retarget.atomic_file import atomic_open


def test_a_failed_write_leaves_the_old_file_and_no_litter(tmp_path):
    target = tmp_path / "take.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["take.npz"]


def test_a_finished_write_replaces_the_file_with_umask_permissions(tmp_path):
    target = tmp_path / "new" / "take.json"
    with atomic_open(target, "w") as handle:
        handle.write("{}")
    assert target.read_text() == "{}"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
