"""Atomic writes: build the output under a temp name beside the target, then rename it into place, so a
reader (or a run resumed after a kill) sees the old output or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # the umask can only be read by setting it: put it back at once
    os.umask(mask)
    return mask


def _normal_mode(path: Path, mask: int) -> None:
    # mkstemp/mkdtemp (and safetensors' save_file) create 0600/0700: give what a plain open() would
    is_dir = path.is_dir()
    os.chmod(path, (0o777 if is_dir or path.stat().st_mode & 0o100 else 0o666) & ~mask)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to `path` through a temp file beside it (same filesystem, so the rename is atomic)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file: pass a file path inside it or remove the folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # unique per writer
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        _normal_mode(Path(tmp), _umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `path` to fill; on success it replaces `path` (an old folder there is
    removed), on an exception it is removed and `path` is left as it was."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder: pass another path or remove the file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        mask = _umask()
        for p in [tmp, *tmp.rglob("*")]:
            if not p.is_symlink():  # chmod would follow it out of the folder
                _normal_mode(p, mask)
        if path.is_dir():
            path.rename(old)  # set aside, not deleted first: `path` is missing only between two renames
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not path.exists():
            old.rename(path)
        raise
    shutil.rmtree(old, ignore_errors=True)
