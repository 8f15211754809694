"""The suite's problems as the local JSONL files of the lm-eval tasks in configs/lm_eval.

`python -m learn2pd.tasks.lm_eval_data` rewrites configs/lm_eval/data/<family>.jsonl (held-out problems, the
test split) and <family>_fewshot.jsonl (training problems, the few-shot split: never a test problem); the
files are committed so that lm-eval runs them with no hub access. `question` is the problem's prompt exactly
as `learn2pd evaluate` feeds it, `answer` the full answer (few-shot examples show it), `target` the graded part.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from learn2pd.tasks.suite import FAMILIES, heldout_problems, train_problems

DATA_DIR = Path(__file__).resolve().parents[2] / "configs" / "lm_eval" / "data"
PER_FAMILY = 1000  # the first held-out problems of each family, in `heldout_problems` order
FEWSHOT = 16  # the first training problems of each family


def problems(family: str, split: str) -> list:
    if split == "fewshot":
        return list(itertools.islice(train_problems((family,)), FEWSHOT))
    return heldout_problems((family,), PER_FAMILY)


def jsonl(family: str, split: str = "test") -> str:
    rows = [{"question": p.prompt, "answer": p.answer, "target": p.target} for p in problems(family, split)]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def data_file(family: str, split: str = "test") -> Path:
    return DATA_DIR / (f"{family}.jsonl" if split == "test" else f"{family}_{split}.jsonl")


def main() -> None:
    from learn2pd.atomic import write_atomic

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for family in FAMILIES:
        for split in ("test", "fewshot"):
            print(f"wrote {write_atomic(data_file(family, split), jsonl(family, split))}")


if __name__ == "__main__":
    main()
