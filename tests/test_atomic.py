"""Atomic writes: a target is the old output or the new one, never half of one, and no temp is left behind."""

import os
import resource
import signal
import stat

import pytest

from learn2pd import atomic
from learn2pd.atomic import atomic_dir, write_atomic


def test_write_atomic_replaces_a_file(tmp_path):
    target = tmp_path / "sub" / "r.json"
    assert write_atomic(target, "one") == target
    write_atomic(target, b"two")
    assert target.read_text() == "two" and os.listdir(target.parent) == ["r.json"]


def test_a_write_failing_part_way_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.bin"
    target.write_bytes(b"old")
    # a file size limit makes the write itself fail after 64 KiB, as a full disk would
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, old_limit[1]))
    try:
        with pytest.raises(OSError):
            write_atomic(target, b"x" * (1 << 20))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["r.bin"]


def test_a_failing_rename_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "r.txt"
    target.write_text("old")

    def refuse(*_):
        raise PermissionError("read-only")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_atomic(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["r.txt"]


def test_a_folder_target_is_refused_with_the_fix(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError, match=r"out is a folder, not a file: pass a file path inside it"):
        write_atomic(tmp_path / "out", "x")
    assert os.listdir(tmp_path) == ["out"] and not os.listdir(tmp_path / "out")


def test_atomic_dir_replaces_an_existing_folder(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "stale.bin").write_text("old")
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        (tmp / "config.json").write_text("{}")
        assert (target / "stale.bin").exists()  # the old folder stays readable until the end
    assert os.listdir(target) == ["config.json"] and os.listdir(tmp_path) == ["ckpt"]


def test_atomic_dir_keeps_the_old_folder_on_an_exception(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "model.bin").write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_dir(target) as tmp:
            (tmp / "model.bin").write_text("half")
            raise RuntimeError("killed")
    assert (target / "model.bin").read_text() == "old" and os.listdir(tmp_path) == ["ckpt"]
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "new"):
            raise RuntimeError
    assert os.listdir(tmp_path) == ["ckpt"]  # no folder appears when the first write fails


def test_outputs_are_readable_by_others_under_umask_022(tmp_path):
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "r.json", "{}")
        with atomic_dir(tmp_path / "f") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors alone makes 0600
            (tmp / "sub").mkdir()
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "r.json") == 0o644
    assert mode(tmp_path / "f" / "model.safetensors") == 0o644
    assert mode(tmp_path / "f") == 0o755 and mode(tmp_path / "f" / "sub") == 0o755
