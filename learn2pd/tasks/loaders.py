"""Problem sets by name: the built-in suite (all families or some), or a JSONL file."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from learn2pd.tasks.suite import GROUPS, VAL_SEED, Problem, heldout_problems, train_problems


def load_problems(tasks: str, n: int, question_field: str = "question", answer_field: str = "answer",
                  split: str = "test", count_flag: str = "--num-samples") -> list[Problem]:
    """Problems by name.

    - `suite` (the families the embedded model is trained on: `short` for now), `short` (arith, sort, rev),
      `long` (chain, table), `all`, or a comma list of families and groups (`arith,long`): held-out
      problems, families interleaved;
    - `train:suite`, `train:long` or `train:arith,sort`: problems of the training stream (for trace collection);
    - `val:suite` (etc.): validation problems, a training-side stream of their own seed, never held out: where
      thresholds and checkpoints are chosen;
    - a `.jsonl` file with `question` and `answer` fields: exact match after stripping;
    - `lm_eval:TASK[:FILTER]`: an lm-evaluation-harness task or group (`lm_eval:learn2pd_suite`, `lm_eval:gsm8k`):
      its prompts, graded by its own filters and metric (learn2pd.tasks.lm_eval_tasks);
    - `hf:NAME[:CONFIG]` (hub id or a folder written by `save_to_disk`): a plain Hugging Face dataset, the
      fallback for data without an lm-eval task: graded GSM8K style (the reference after `####`, the model's
      last number).

    `count_flag` is how the caller's user sets `n` (named when it is not positive).
    """
    if n <= 0:
        raise ValueError(f"{count_flag} must be > 0, got {n}")
    if tasks.startswith("lm_eval:"):
        from learn2pd.tasks.lm_eval_tasks import lm_eval_problems

        return lm_eval_problems(tasks[8:], n)
    if tasks.startswith("hf:"):
        return _hf_problems(tasks[3:], n, question_field, answer_field, split)
    if tasks.startswith("train:"):  # the training stream of the built-in suite (never a held-out problem)
        return list(itertools.islice(train_problems(_families(tasks[6:])), n))
    if tasks.startswith("val:"):
        return list(itertools.islice(train_problems(_families(tasks[4:]), seed=VAL_SEED), n))
    if tasks.endswith(".jsonl"):
        path = Path(tasks)
        if not path.is_file():
            raise FileNotFoundError(f"no task file {tasks}: give a .jsonl with question/answer fields")
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark some editors write is not data
        except UnicodeDecodeError as e:
            raise ValueError(f"{tasks} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
        problems = []
        # split on "\n" only: splitlines() also breaks at U+2028 etc., and line numbers would drift from editors'
        for line_no, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:  # e.lineno would count within this one line: name the file's
                raise ValueError(f"{tasks}:{line_no} is not valid JSON ({e.msg}, column {e.colno}): "
                                 "write one JSON object per line") from None
            if not isinstance(row, dict) or "question" not in row or "answer" not in row:
                raise ValueError(f"{tasks}:{line_no} lacks a 'question' or 'answer' field")
            question, answer = row["question"], row["answer"]
            if not isinstance(question, str):  # an empty one is named by the prompt check (collect-traces skips it)
                raise ValueError(f"{tasks}:{line_no}: question must be text, got {question!r}")
            if not isinstance(answer, (str, int, float)) or isinstance(answer, bool) or not str(answer).strip():
                raise ValueError(f"{tasks}:{line_no}: answer must be text or a number (the reply it is graded "
                                 f"against), got {answer!r}")
            problems.append(Problem("jsonl", question, str(answer), source=f"{tasks}:{line_no}"))
        if not problems:
            raise ValueError(f"{tasks} has no problems: add lines like {{\"question\": ..., \"answer\": ...}}")
        return problems[:n]
    return heldout_problems(_families(tasks), n)


def _families(text: str) -> tuple[str, ...]:
    """Family names, a group's name (`suite`, `short`, `long`, `all`, `choice`) standing for its families."""
    names = (f.strip() for f in text.split(",") if f.strip())
    return tuple(dict.fromkeys(f for name in names for f in GROUPS.get(name, (name,))))


def _hf_problems(name: str, n: int, question_field: str, answer_field: str, split: str) -> list[Problem]:
    import datasets

    path, _, config = name.partition(":")
    if Path(path).is_dir():
        ds = datasets.load_from_disk(path)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ValueError(f"dataset {path} has no split {split!r}: choose from {', '.join(ds)}")
            ds = ds[split]
    else:
        try:
            ds = datasets.load_dataset(path, config or None, split=split)
        except (ConnectionError, FileNotFoundError, ValueError) as e:  # offline, unknown id, missing split
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"hub dataset {name!r} could not be loaded ({reason}): check the name and split, or "
                             "pass a folder written by save_to_disk (hf:FOLDER) or a .jsonl file") from None
    missing = [f for f in (question_field, answer_field) if f not in ds.column_names]
    if missing:
        raise ValueError(f"dataset {name} has no column {missing[0]!r} (columns: {', '.join(ds.column_names)}): "
                         "set --question-field / --answer-field")
    if len(ds) == 0:
        raise ValueError(f"dataset {name} (split {split!r}) is empty: choose another --split or dataset")
    rows = ds.select(range(min(n, len(ds))))
    return [Problem("numeric", str(r[question_field]), str(r[answer_field])) for r in rows]
