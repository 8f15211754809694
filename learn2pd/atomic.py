"""Atomic writes: build the output under a temp name beside the target, then rename it into place, so a
reader (or a run resumed after a kill) sees the old output or the new one, never half of one."""

from __future__ import annotations

import contextlib
import fnmatch
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


def foreign_entries(path: str | os.PathLike, owns: tuple[str, ...]) -> list[str]:
    """Names in folder `path` that no pattern of `owns` (what a tool writes there) matches: files the tool did
    not create, which it must not replace or delete. Our own hidden temps (.NAME.*.tmp) do not count."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(p.name for p in path.iterdir() if not (p.name.startswith(".") and ".tmp" in p.name)
                  and not any(fnmatch.fnmatch(p.name, o) for o in owns))


def refuse_foreign(path: Path, name: str, owns: tuple[str, ...], what: str, overwrite_flag: str) -> None:
    extra = foreign_entries(path, owns)
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise FileExistsError(f"{name} {path} already holds files that are not {what} ({shown}): pass a new or "
                              f"empty folder, or {overwrite_flag} to replace it")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, owns: tuple[str, ...] | None = None, what: str = "this output",
               overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp folder beside `path` to fill; on success it replaces `path` (an old folder there is
    removed), on an exception it is removed and `path` is left as it was. With `owns` (the patterns of what
    the caller writes), an old folder holding anything else is refused unless `overwrite`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder: pass another path or remove the file")
    if owns is not None and not overwrite:
        refuse_foreign(path, str(path), owns, what, "overwrite=True")
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


# The shipped models and filters: tools write there only when told to (tests point this elsewhere).
CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def check_output(path: str | os.PathLike, name: str, folder: bool = False, overwrite: bool = False,
                 overwrite_flag: str = "--overwrite", owns: tuple[str, ...] | None = None,
                 what: str = "this tool's output") -> Path:
    """Refuse an output before any work: under checkpoints/ (unless `overwrite`), a file where a folder is
    meant or the reverse, in a folder this user cannot write, or (with `owns`, the patterns of what the tool
    writes into its folder) an existing folder holding other files (unless `overwrite`): those are the
    user's, and the tool would replace or mix into them. `name` is the input as the user gave it."""
    path = Path(path)
    if not overwrite and path.resolve().is_relative_to(CHECKPOINTS.resolve()):
        raise ValueError(f"{name} {path} is inside {CHECKPOINTS}, the shipped checkpoints: write under outputs/ "
                         f"instead, or pass {overwrite_flag} to replace them")
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{name} {path} is a file, not a folder: pass another path or remove the file")
    if not folder and path.is_dir():
        raise IsADirectoryError(f"{name} {path} is a folder, not a file: pass a file path inside it")
    if folder and owns is not None and not overwrite:
        refuse_foreign(path, name, owns, what, overwrite_flag)
    # the writes land beside `path` (temp + rename), and a collection also writes inside its folder
    for target in (path.parent, path) if folder and path.is_dir() else (path.parent,):
        existing = next(p for p in (target, *target.parents) if p.exists())
        if not existing.is_dir():
            raise NotADirectoryError(f"{name} {path}: {existing} is a file, not a folder: pass another path")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"{name} {path}: {existing} is not writable: pass a path in a writable folder")
    return path
