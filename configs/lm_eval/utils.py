"""Loads a learn2pd_<family> task's local JSONL (data/ beside this file, no hub access): the held-out problems
as the test split, a few training problems as the few-shot split."""

import json
from pathlib import Path

import datasets

DATA = Path(__file__).resolve().parent / "data"


def _rows(path: Path) -> datasets.Dataset:
    lines = path.read_text(encoding="utf-8").splitlines()
    return datasets.Dataset.from_list([json.loads(x) for x in lines if x.strip()])


def load_family(family: str, **_) -> datasets.DatasetDict:
    # lm-eval also passes the run's metadata (model_args among them) as keywords: ignored.
    return datasets.DatasetDict({"test": _rows(DATA / f"{family}.jsonl"),
                                 "fewshot": _rows(DATA / f"{family}_fewshot.jsonl")})
