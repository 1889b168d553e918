"""fmr.files.write_atomically: all or nothing, the usual file mode, and the umask left alone."""

from __future__ import annotations

import os
import stat
import threading

import numpy as np
import pytest

from fmr.files import write_atomically, write_text_atomically


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomically(tmp_path / "card.json", "old")

    def fails(temporary):
        temporary.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(path, fails)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]


def test_files_get_the_usual_mode_and_the_umask_is_not_touched(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)

    def owner_only(temporary):  # as safetensors writes its files
        temporary.unlink()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)

    path = write_atomically(tmp_path / "weights.safetensors", owner_only)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert os.umask(umask) == umask  # unchanged


def test_threads_writing_the_same_file_never_collide(tmp_path):
    path = tmp_path / "table.npz"
    errors = []

    def writer(value):
        try:
            for _ in range(5):
                write_atomically(path, lambda t: np.savez(t, value=np.full(100, value)))
        except Exception as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(v,)) for v in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with np.load(path) as data:
        assert len(set(data["value"].tolist())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.npz"]
