"""fileio.atomic_path: the final file appears whole or not at all, with the mode the user's umask gives."""

from __future__ import annotations

import os
import stat

import pytest

from nlbpipe.fileio import atomic_path, write_json_atomic


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_keep_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        with atomic_path(tmp_path / "b.h5") as tmp:
            import h5py

            with h5py.File(tmp, "w") as f:  # h5py truncates the temporary file: its mode stays
                f["x"] = [1]
    finally:
        os.umask(old)
    for name in ("a.json", "b.h5"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_a_failed_block_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "c.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
