"""Shards on disk, written atomically, so a killed collection resumes without loss or duplicates.

    OUT/shards/rank{r}-{k:05d}/   one DatasetDict per finished batch of prompts (temp name, then rename)
    OUT/traces/                   the merged DatasetDict (`load_traces(OUT)`), with metadata.json
    OUT/skipped.jsonl             prompts that were skipped, with the reason
    OUT/run.json                  what the shards were collected with: a rerun must match it to resume
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import datasets

from learn2pd.atomic import atomic_dir, write_atomic
from learn2pd.traces.schema import SEQUENCE_FEATURES, STEP_FEATURES, check_schema

# what a collection folder holds, and its merged dataset: anything else there is the user's
COLLECTION_FILES = ("shards", "traces", "run.json", "skipped.jsonl", "lock", "logs")  # logs: its W&B run
MERGED_FILES = ("dataset_dict.json", "steps", "sequences", "metadata.json")

datasets.disable_progress_bars()  # our own bar reports prompts/s; per-shard bars are noise


def shard_dirs(out: Path) -> list[Path]:
    root = out / "shards"
    if not root.is_dir():
        return []
    # temp folders are hidden (".rank..."); "rank*.tmp" ones are left by older versions killed mid-write
    return sorted(p for p in root.glob("rank*-*") if p.is_dir() and not p.name.endswith(".tmp"))


def done_prompt_ids(out: Path) -> set[int]:
    ids: set[int] = set()
    for shard in shard_dirs(out):
        ids.update(datasets.load_from_disk(str(shard))["sequences"]["prompt_id"])
    return ids


def write_shard(out: Path, rank: int, steps: dict, sequences: dict) -> Path:
    root = out / "shards"
    root.mkdir(parents=True, exist_ok=True)
    k = len(list(root.glob(f"rank{rank}-*")))
    final = root / f"rank{rank}-{k:05d}"
    while final.exists():
        k += 1
        final = root / f"rank{rank}-{k:05d}"
    dd = datasets.DatasetDict({"steps": datasets.Dataset.from_dict(steps, features=STEP_FEATURES),
                               "sequences": datasets.Dataset.from_dict(sequences, features=SEQUENCE_FEATURES)})
    with atomic_dir(final) as tmp:
        dd.save_to_disk(str(tmp))
    return final


def lock_holder(out: Path) -> int | None:
    """The pid of another live process collecting into `out` (its OUT/lock), or None: no lock, or a stale one
    left by a process that is gone (killed, or the machine restarted)."""
    try:
        pid = int((out / "lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:  # it exists, and is another user's
        pass
    return pid


def refuse_if_locked(out: Path) -> None:
    pid = lock_holder(out)
    if pid is not None:
        raise ValueError(f"{out} is being collected into by process {pid}: wait for it to finish (a rerun then "
                         "resumes), or pass another --out")


@contextlib.contextmanager
def locked(out: Path):
    """Hold OUT/lock (this pid) while collecting: two runs into one folder would each record every prompt.
    A stale lock is taken over; the lock goes when the block ends, however it ends."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lock"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            refuse_if_locked(out)
            path.unlink(missing_ok=True)  # its process is gone
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def check_resume(out: Path, run: dict, partial: bool = True) -> None:
    """Refuse to resume shards collected with other settings than `run`; `partial`: `run` holds only the
    settings known before the model loads (the weights' fingerprints come later), so a mismatch there is
    refused at once."""
    path = out / "run.json"
    if not (shard_dirs(out) and path.is_file()):
        return
    old = _read_json(path, "delete it (or the folder) to start over")
    differ = sorted(k for k in (set(run) if partial else set(old) | set(run)) if old.get(k) != run.get(k))
    if differ:
        raise ValueError(f"{out} holds traces collected with a different {', '.join(differ)}: "
                         "pass a new --out, or delete that folder to start over")


def claim(out: Path, run: dict) -> None:
    """Record what this collection runs with, or refuse to resume shards collected with anything else:
    mixing traces of two models (or two settings) into one dataset would be silent garbage."""
    path = out / "run.json"
    if shard_dirs(out) and path.is_file():
        check_resume(out, run, partial=False)
        return
    if shard_dirs(out):
        raise ValueError(f"{out} holds shards of an unknown run (no run.json): pass a new --out, or delete it")
    write_atomic(path, json.dumps(run, indent=2, sort_keys=True) + "\n")


def merge(out: Path, metadata: dict) -> Path:
    """Concatenate every shard, ordered by prompt id, into OUT/traces (atomically)."""
    shards = [datasets.load_from_disk(str(s)) for s in shard_dirs(out)]
    if not shards:
        raise ValueError(f"no traces collected in {out}: every prompt was skipped (see skipped.jsonl)")
    steps = datasets.concatenate_datasets([s["steps"] for s in shards])
    sequences = datasets.concatenate_datasets([s["sequences"] for s in shards])
    # One step row per (prompt, block, step): this order is unique, whatever the shard layout was.
    with warnings.catch_warnings():  # datasets' sort passes an option pyarrow >= 25 deprecates: not ours to fix
        warnings.filterwarnings("ignore", "Specifying null_placement", FutureWarning)
        dd = datasets.DatasetDict({"steps": steps.sort(["prompt_id", "block", "step"]),
                                   "sequences": sequences.sort("prompt_id")})
    final = out / "traces"
    with atomic_dir(final, MERGED_FILES, "merged traces") as tmp:
        dd.save_to_disk(str(tmp))
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return final


def load_traces(path: str | Path) -> datasets.DatasetDict:
    """Load a traces dataset (a collection folder or its `traces/` folder), checking the schema."""
    given = path = Path(path)
    if path.is_file():
        raise NotADirectoryError(f"traces {given} is a file: pass the folder collect-traces wrote (its --out)")
    if (path / "traces").is_dir():
        path = path / "traces"
    if not any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):  # empty, or killed before merge
        raise FileNotFoundError(f"no merged traces at {given}: run or finish `collect-traces --out {given}`")
    ds = datasets.load_from_disk(str(path))
    if not isinstance(ds, datasets.DatasetDict):
        raise ValueError(f"{path} is a single dataset, not a learn2pd traces DatasetDict")
    check_schema(ds, str(path))
    return ds


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    meta = (path / "traces" / "metadata.json") if (path / "traces").is_dir() else path / "metadata.json"
    return _read_json(meta, f"merge again with `collect-traces --out {path}`") if meta.is_file() else {}


def _read_json(path: Path, fix: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path} is not valid JSON ({e}): {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object: {fix}")
    return data
