"""Few-shot prompts for the built-in suite: K solved training problems of the same family before the
question (the format the Learn2PD and Fast-dLLM tables use, 4-8 shot there)."""

from __future__ import annotations

import dataclasses
import itertools
import random

from learn2pd.tasks.suite import FAMILIES, Problem, train_problems

SHOT_POOL = 256  # training problems per family the shots are drawn from (never a held-out problem)


def check_fewshot(problems: list[Problem], k: int) -> None:
    """Refuse shots that would do nothing (and yet be recorded in results): none of `problems` is of the suite."""
    if k > 0 and not any(p.family in FAMILIES for p in problems):
        raise ValueError(f"--num-fewshot {k} applies to the built-in suite's families only: a JSONL or hub dataset "
                         "holds its own shots in its questions, and an lm-eval task takes lm-eval's --num_fewshot")


def with_fewshot(problems: list[Problem], k: int, seed: int = 0) -> list[Problem]:
    """Each problem's prompt preceded by `k` solved problems of its family, `question\\nanswer\\n` each,
    drawn per problem from a fixed pool of training problems (deterministic for a seed). Problems of
    families outside the suite (a JSONL, an lm-eval task) are returned unchanged."""
    if k < 0 or k > SHOT_POOL:
        raise ValueError(f"--num-fewshot must be in [0, {SHOT_POOL}] (the training problems shots come from), got {k}")
    if k == 0:
        return list(problems)
    pool = {f: list(itertools.islice(train_problems((f,)), SHOT_POOL)) for f in FAMILIES}
    rng = random.Random(seed)
    out = []
    for p in problems:
        if p.family not in pool:
            out.append(p)
            continue
        shots = rng.sample(pool[p.family], k)
        prefix = "".join(f"{s.prompt}\n{s.answer}\n" for s in shots)
        out.append(dataclasses.replace(p, prompt=prefix + p.prompt))
    return out
