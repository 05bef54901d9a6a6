import os
import stat

import pytest

from nettle.files import atomic_open, atomic_write


def test_atomic_open_replaces_the_file_when_the_block_ends(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")
    with atomic_open(path, "wb") as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"  # nothing visible before the block ends
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


def test_atomic_open_leaves_the_old_file_when_the_block_raises(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"), atomic_open(path) as f:
        f.write(b"half")
        raise RuntimeError("killed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


def test_atomic_open_writes_text_as_utf8_and_refuses_other_modes(tmp_path):
    with atomic_open(tmp_path / "t.txt", "w") as f:
        f.write("µ")
    assert (tmp_path / "t.txt").read_bytes() == "µ".encode()
    with pytest.raises(ValueError, match="mode must be"), atomic_open(tmp_path / "t.txt", "a"):
        pass


def test_atomic_write_is_atomic_open(tmp_path):
    assert atomic_write(tmp_path / "a.txt", "x", mode=0o600) == tmp_path / "a.txt"
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o600
