"""Problems from lm-evaluation-harness tasks (`--tasks lm_eval:NAME[:FILTER]`), graded by lm-eval itself.

The prompt is the one the task builds (doc_to_text, its description and `num_fewshot` examples drawn with
lm-eval's default few-shot seed) as lm-eval's `--apply_chat_template` renders it: one user turn, the few-shot
examples folded in. Trailing whitespace is dropped: learn2pd's prompt formats supply the separator before the
answer (the chat template's turn, or the plain `<bos>question\\n`). The grade is the task's: the output cut at
its `until` stop sequences, its filter pipeline (the first one, or FILTER: e.g. gsm8k's `flexible-extract`),
then its first metric; a problem is correct when that metric gives full marks (1.0, as exact_match and acc
score a correct answer). A group (e.g. `learn2pd_suite`) interleaves its tasks' documents.

The tasks in configs/lm_eval are always found (no hub index needed); any other task name is looked up among
lm-eval's own, whose datasets must be in the local Hugging Face cache when the hub is unreachable.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from learn2pd.tasks.suite import Problem

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's, for a task that names none
LOCAL_TASKS = Path(__file__).resolve().parents[2] / "configs" / "lm_eval"
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed: the same examples as `lm_eval --num_fewshot`


def cut_at_stops(text: str, until) -> str:
    """`text` before the earliest of the stop sequences (lm-eval's `until`, a string or a list)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    return text[:min((i for s in stops if s and (i := text.find(s)) >= 0), default=len(text))]


def lm_eval_problems(name: str, n: int, include_path: str | Path | None = None) -> list[Problem]:
    """The first `n` documents of task (or group) `name` as problems, each with the task's grader."""
    task_name, _, filter_name = name.partition(":")
    gens = [_task_problems(task, filter_name) for task in _load(task_name, include_path)]
    problems: list[Problem] = []
    while gens and len(problems) < n:  # round robin over a group's tasks, as the suite interleaves families
        for gen in list(gens):
            problem = next(gen, None)
            if problem is None:
                gens.remove(gen)
            elif len(problems) < n:
                problems.append(problem)
    if not problems:
        raise ValueError(f"lm-eval task {task_name!r} has no documents")
    return problems


def _load(task_name: str, include_path) -> list:
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ValueError("--tasks lm_eval:... needs lm-evaluation-harness: pip install 'learn2pd[eval]'") from None
    paths = [str(p) for p in (include_path, LOCAL_TASKS) if p and Path(p).is_dir()]
    manager = TaskManager(include_path=paths or None, include_defaults=False)  # the local tasks index in ~0.1 s
    if task_name not in manager.all_tasks:
        manager = TaskManager(include_path=paths or None)
    if task_name not in manager.all_tasks:
        own = ", ".join(sorted(p.stem for p in LOCAL_TASKS.glob("*.yaml")))
        raise ValueError(f"unknown lm-eval task {task_name!r}: list them with `lm-eval ls tasks` (learn2pd's own: "
                         f"{own})")
    try:
        loaded = manager.load([task_name])
    except Exception as e:  # a hub dataset that is not cached, a broken YAML: name the task, keep lm-eval's reason
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"lm-eval could not load task {task_name!r} ({reason}): its dataset must be downloaded "
                         "(or in the Hugging Face cache, with HF_DATASETS_OFFLINE=1 when offline)") from None
    return list(loaded["tasks"].values())


def _task_problems(task, filter_name: str):
    name = task.config.task
    if task.OUTPUT_TYPE != "generate_until":
        raise ValueError(f"lm-eval task {name!r} is scored by {task.OUTPUT_TYPE}, not by a generated answer: run it "
                         "with `learn2pd lm-eval --model learn2pd` (the Monte-Carlo loglikelihood) instead")
    ensembles = {e.name: e for e in task._filters}
    if filter_name and filter_name not in ensembles:
        raise ValueError(f"lm-eval task {name!r} has no filter {filter_name!r}: choose from {', '.join(ensembles)}")
    ensemble = ensembles[filter_name] if filter_name else task._filters[0]
    metric = next(iter(task._metric_fn_list))
    until = (task.config.generation_kwargs or {}).get("until", [])
    budget = int((task.config.generation_kwargs or {}).get("max_gen_toks") or DEFAULT_MAX_GEN_TOKS)
    task.set_fewshot_seed(FEWSHOT_SEED)
    shots = task.config.num_fewshot or 0
    for doc in task.eval_docs:
        yield Problem(name, _prompt(task, doc, shots), str(task.doc_to_target(doc)),
                      grader=partial(_grade, task, doc, ensemble, metric, until), max_gen_toks=budget)


def _prompt(task, doc, shots: int) -> str:
    messages = task.fewshot_context(doc, shots, apply_chat_template=True, chat_template=lambda m, **_: m,
                                    gen_prefix=task.doc_to_prefix(doc))
    if not isinstance(messages, list) or any(not isinstance(m, dict) or m["role"] == "assistant" for m in messages):
        raise ValueError(f"lm-eval task {task.config.task!r} prefills the answer (gen_prefix) or has several inputs: "
                         "learn2pd evaluate feeds one question; run it with `learn2pd lm-eval --model learn2pd`")
    return "".join(m["content"] for m in messages).rstrip()


def _grade(task, doc, ensemble, metric: str, until, output: str) -> bool:
    resps = [[cut_at_stops(output, until)]]  # one document, one response, as lm-eval's instances hold them
    for make_filter in ensemble.filters:
        resps = list(make_filter().apply(resps, [doc]))
    return float(task.process_results(doc, [resps[0]])[metric]) >= 1.0
