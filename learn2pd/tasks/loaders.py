"""Problem sets by name: the built-in suite (all families or some), or a JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

from learn2pd.tasks.suite import FAMILIES, Problem, heldout_problems


def load_problems(tasks: str, n: int) -> list[Problem]:
    """`suite` (every family), a comma list of families (`arith,sort`), or a JSONL file with
    `question` and `answer` fields (exact match after stripping)."""
    if n <= 0:
        raise ValueError(f"--num-samples must be > 0, got {n}")
    if tasks.endswith(".jsonl"):
        path = Path(tasks)
        if not path.is_file():
            raise FileNotFoundError(f"no task file {tasks}: give a .jsonl with question/answer fields")
        problems = []
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "question" not in row or "answer" not in row:
                raise ValueError(f"{tasks}:{line_no} lacks a 'question' or 'answer' field")
            problems.append(Problem("jsonl", row["question"], str(row["answer"])))
        return problems[:n]
    families = FAMILIES if tasks == "suite" else tuple(f.strip() for f in tasks.split(","))
    return heldout_problems(families, n)
