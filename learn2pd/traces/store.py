"""Shards on disk, written atomically, so a killed collection resumes without loss or duplicates.

    OUT/shards/rank{r}-{k:05d}/   one DatasetDict per finished batch of prompts (temp name, then rename)
    OUT/traces/                   the merged DatasetDict (`load_traces(OUT)`), with metadata.json
    OUT/skipped.jsonl             prompts that were skipped, with the reason
    OUT/run.json                  what the shards were collected with: a rerun must match it to resume
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import datasets

from learn2pd.atomic import atomic_dir, write_atomic
from learn2pd.traces.schema import SEQUENCE_FEATURES, STEP_FEATURES, check_schema

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


def claim(out: Path, run: dict) -> None:
    """Record what this collection runs with, or refuse to resume shards collected with anything else:
    mixing traces of two models (or two settings) into one dataset would be silent garbage."""
    path = out / "run.json"
    if shard_dirs(out) and path.is_file():
        old = json.loads(path.read_text())
        differ = sorted(k for k in set(old) | set(run) if old.get(k) != run.get(k))
        if differ:
            raise ValueError(f"{out} holds traces collected with a different {', '.join(differ)}: "
                             "pass a new --out, or delete that folder to start over")
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
    with atomic_dir(final) as tmp:
        dd.save_to_disk(str(tmp))
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return final


def load_traces(path: str | Path) -> datasets.DatasetDict:
    """Load a traces dataset (a collection folder or its `traces/` folder), checking the schema."""
    given = path = Path(path)
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
    return json.loads(meta.read_text()) if meta.is_file() else {}
