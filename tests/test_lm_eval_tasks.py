"""The suite as lm-eval tasks (configs/lm_eval): shipped data, lm-eval's grading against `is_correct`, lm-eval's
accuracy against `learn2pd evaluate` on the same problems and plan, `--tasks lm_eval:NAME` in evaluate and
collect-traces, and the `learn2pd lm-eval` command line with its cost file."""

import json

import pytest

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from learn2pd.decoding.config import DecodeConfig  # noqa: E402
from learn2pd.decoding.engine import decode_text  # noqa: E402
from learn2pd.evaluation.runner import evaluate, run_policy  # noqa: E402
from learn2pd.harness import Learn2PDLM  # noqa: E402
from learn2pd.tasks.lm_eval_data import data_file, jsonl  # noqa: E402
from learn2pd.tasks.lm_eval_tasks import LOCAL_TASKS  # noqa: E402
from learn2pd.tasks.loaders import load_problems  # noqa: E402
from learn2pd.tasks.suite import (  # noqa: E402
    FAMILIES,
    LONG_FAMILIES,
    LONG_GEN_LENGTH,
    SHORT_FAMILIES,
    SHORT_GEN_LENGTH,
    Problem,
    heldout_problems,
    is_correct,
)

PLAN = "threshold:tau=0.5+eotp"  # a low threshold: some arith answers are wrong, so grading is exercised both ways
LIMIT = 4  # per family
CFG = DecodeConfig(gen_length=SHORT_GEN_LENGTH, block_length=32)
LONG_CFG = DecodeConfig(gen_length=LONG_GEN_LENGTH, block_length=32)


def test_shipped_data_is_the_suite():
    for family in FAMILIES:
        for split in ("test", "fewshot"):
            assert data_file(family, split).read_text(encoding="utf-8") == jsonl(family, split), (family, split)
    fewshot = {json.loads(x)["question"] for f in FAMILIES for x in data_file(f, "fewshot").read_text().splitlines()}
    # a few-shot example is never a test problem
    assert not fewshot & {p.prompt for p in heldout_problems(FAMILIES, n=5000)}


def test_lm_eval_grading_is_the_suite_rule():
    for family in FAMILIES:
        [ours] = heldout_problems((family,), 1)
        [theirs] = load_problems(f"lm_eval:learn2pd_{family}", 1)
        assert theirs.prompt == ours.prompt and theirs.family == f"learn2pd_{family}"
        t = ours.target
        outputs = [ours.answer, f"  {ours.answer}\n", ours.answer + "0", "", t, f"#{t}", f"#{t}#", f"1#{t}\n",
                   f"# {t} ", f"#{t}\n#0", "x"]
        grades = [theirs.grade(o) for o in outputs]
        assert grades == [is_correct(ours, o) for o in outputs], family
        assert True in grades and False in grades


GROUPS = {"learn2pd_short": (SHORT_FAMILIES, CFG), "learn2pd_long": (LONG_FAMILIES, LONG_CFG)}


def _ours(tiny, group):
    model, tok, spec = tiny
    families, cfg = GROUPS[group]
    problems = heldout_problems(families, n=LIMIT * len(families))  # families interleaved: the first LIMIT of each
    return evaluate(model, tok, spec, problems, [PLAN], cfg, progress=False)["results"][0]


@pytest.fixture(scope="session")  # not recomputed when a worker interleaves other modules
def suite_eval(tiny):
    return _ours(tiny, "learn2pd_short")


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.xdist_group("lm-eval-suite")  # shares the module's suite_eval on one worker
def test_lm_eval_accuracy_equals_learn2pd_evaluate(tiny, suite_eval, one_thread, group):
    model, tok, spec = tiny
    families, cfg = GROUPS[group]
    ours_all = suite_eval if group == "learn2pd_short" else _ours(tiny, group)
    # no gen_length: each request decodes its task's max_gen_toks (128 short, 256 long)
    lm = Learn2PDLM(model, tokenizer=tok, spec=spec, plan=PLAN, block_length=cfg.block_length)
    out = lm_eval.simple_evaluate(model=lm, tasks=[group], limit=LIMIT, log_samples=True,
                                  task_manager=TaskManager(include_path=str(LOCAL_TASKS), include_defaults=False))
    cost = out["config"]["learn2pd"]["decoding_cost"]
    for family in families:
        task = f"learn2pd_{family}"
        acc = 100 * out["results"][task]["exact_match,answer"]
        ours = ours_all["per_family"][family]
        print(f"{task}: lm_eval {acc:.1f}% NFE {cost[task]['nfe_per_sample']:.2f} | learn2pd evaluate "
              f"{ours['accuracy']:.1f}% NFE {ours['nfe_mean']:.2f}")
        assert acc == pytest.approx(ours["accuracy"]) and cost[task]["nfe_per_sample"] == ours["nfe_mean"]
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        records = [r for r in ours_all["records"] if r["family"] == family]
        assert [s["resps"][0][0] for s in samples] == [r["output"] for r in records]
        assert [bool(s["exact_match"]) for s in samples] == [r["correct"] for r in records]
    total = 100 * out["results"][group]["exact_match,answer"]
    print(f"{group}: lm_eval {total:.1f}% | learn2pd evaluate {ours_all['accuracy']:.1f}%")
    assert total == pytest.approx(ours_all["accuracy"])


@pytest.mark.xdist_group("lm-eval-suite")  # shares the module's suite_eval on one worker
def test_evaluate_takes_an_lm_eval_task(tiny, suite_eval):
    model, tok, spec = tiny
    problems = load_problems("lm_eval:learn2pd_short", LIMIT * len(SHORT_FAMILIES))
    assert [p.prompt for p in problems] == [p.prompt for p in heldout_problems(SHORT_FAMILIES, n=len(problems))]
    r = evaluate(model, tok, spec, problems, [PLAN], CFG, progress=False)["results"][0]
    assert [(x["output"], x["correct"]) for x in r["records"]] == [(x["output"], x["correct"])
                                                                   for x in suite_eval["records"]]
    assert set(r["per_family"]) == {f"learn2pd_{f}" for f in SHORT_FAMILIES}
    assert r["accuracy"] == suite_eval["accuracy"]


def test_runner_and_traces_grade_with_the_problems_grader(tiny, tmp_path):
    model, tok, spec = tiny
    [p] = heldout_problems(("rev",), 1)
    never = Problem(p.family, p.prompt, p.answer, grader=lambda out: False)
    r = run_policy(model, tok, spec, [p, never], PLAN, CFG, progress=False)
    assert [x["output"] for x in r["records"]] == [p.answer] * 2  # solved twice, graded by each problem's grader
    assert [x["correct"] for x in r["records"]] == [True, False]

    from learn2pd.traces import CollectConfig, collect_traces, load_traces

    cfg = CollectConfig(out=str(tmp_path / "t"), tasks="lm_eval:learn2pd_arith", num_prompts=3, mode="reference",
                        reference_plan="vanilla", dtype="float32", gen_length=64, block_length=32, batch_size=3)
    collect_traces(cfg, progress=False)
    seqs = load_traces(tmp_path / "t")["sequences"].sort("prompt_id")
    problems = load_problems("lm_eval:learn2pd_arith", 3)
    assert seqs["prompt"] == [q.prompt for q in problems]
    import torch

    texts = [decode_text(tok, spec, torch.tensor(ref)) for ref in seqs["reference"]]
    assert seqs["correct"] == [q.grade(t) for q, t in zip(problems, texts)] and any(seqs["correct"])


def test_lm_eval_errors_name_the_fix():
    with pytest.raises(ValueError, match="unknown lm-eval task 'learn2pd_nope'.*learn2pd_arith"):
        load_problems("lm_eval:learn2pd_nope", 2)
    with pytest.raises(ValueError, match="has no filter 'strict'.*answer"):
        load_problems("lm_eval:learn2pd_rev:strict", 2)


def test_command_line_runs_lm_eval_and_writes_the_cost_beside_its_results(tmp_path, capsys):
    from learn2pd.harness.cli import main

    # no --model: learn2pd is the default; an unquoted plan spec with a comma; lm-eval's default device is cuda:0
    assert main(["--model_args", "plan=localleap:kappa=0.8,tau=0.6+eotp,gen_length=64,block_length=32,dtype=float32",
                 "--tasks", "learn2pd_rev", "--include_path", str(LOCAL_TASKS), "--limit", "2", "--batch_size", "2",
                 "--output_path", str(tmp_path)]) == 0
    [results] = list(tmp_path.glob("**/results_*.json"))
    [cost_file] = list(results.parent.glob("decoding_cost_*.json"))
    assert cost_file.name == results.name.replace("results_", "decoding_cost_")
    cost = json.loads(cost_file.read_text())
    assert cost["plan"].startswith("localleap:kappa=0.8,tau=0.6") and cost["decode"]["gen_length"] == 64
    rev = cost["decoding_cost"]["learn2pd_rev"]
    assert rev["samples"] == 2 and rev["tokens_per_forward"] == pytest.approx(64 / rev["nfe_per_sample"])
    assert json.loads(results.read_text())["results"]["learn2pd_rev"]["exact_match,answer"] == 1.0
    out = capsys.readouterr()
    assert "| learn2pd_rev | 2 |" in out.out
    assert f"lm-eval results written to {results}" in out.err and f"decoding cost written to {cost_file}" in out.err


GSM_LIKE = """task: gsm_like
custom_dataset: !function utils.load
output_type: generate_until
fewshot_split: train
test_split: test
description: "Solve.\\n\\n"
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{answer}}"
num_fewshot: 2
generation_kwargs:
  until: ["Question:"]
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    regexes_to_ignore: [",", "\\\\$", "(?s).*#### ", "\\\\.$"]
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: take_first
  - name: flexible-extract
    filter:
      - function: regex
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{2,})|(-?[0-9]+)"
      - function: take_first
"""

GSM_UTILS = '''import datasets

def load(**_):
    row = lambda q, a: {"question": q, "answer": a}
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([row("What is 6*7?", "6*7=42\\n#### 42")]),
                                 "train": datasets.Dataset.from_list([row("1+1?", "#### 2"), row("2+2?", "#### 4")])})
'''


def test_a_gsm8k_style_task_prompts_with_its_shots_and_grades_with_its_filters(tmp_path):
    from learn2pd.tasks.lm_eval_tasks import lm_eval_problems

    (tmp_path / "gsm_like.yaml").write_text(GSM_LIKE)
    (tmp_path / "utils.py").write_text(GSM_UTILS)
    [strict] = lm_eval_problems("gsm_like", 5, include_path=tmp_path)
    [flexible] = lm_eval_problems("gsm_like:flexible-extract", 5, include_path=tmp_path)
    p = strict.prompt
    assert p.startswith("Solve.\n\nQuestion: ") and p.endswith("\n\nQuestion: What is 6*7?\nAnswer:")
    assert "Question: 1+1?\nAnswer: #### 2" in p and "Question: 2+2?\nAnswer: #### 4" in p
    assert strict.grade("6*7=42\n#### 42") and not strict.grade("so 42") and flexible.grade("so 42")
    # the output is cut at the task's stop sequence before the filter reads it
    assert flexible.grade("it is 42\nQuestion: and 5*5? 25") and not flexible.grade("it is 4\nQuestion: 42")


def test_lm_eval_few_shot_prompts_have_learn2pds_few_shot_format(tmp_path):
    # `lm_eval --num_fewshot K` on a learn2pd task must show the shots exactly as `--num-fewshot K` does
    # (`question\nanswer\n` each, then the question): the format the tiny model is trained to read
    from learn2pd.tasks.fewshot import with_fewshot
    from learn2pd.tasks.lm_eval_tasks import lm_eval_problems

    (tmp_path / "shots_arith.yaml").write_text(f"include: {LOCAL_TASKS / '_learn2pd_template_yaml'}\n"
                                                "task: shots_arith\ndataset_kwargs:\n  family: arith\n"
                                                "num_fewshot: 2\n")
    [theirs] = lm_eval_problems("shots_arith", 1, include_path=tmp_path)
    [ours] = with_fewshot(heldout_problems(("arith",), 1), 2)
    shots, question = theirs.prompt.rsplit("\n", 1)
    assert question == ours.prompt.rsplit("\n", 1)[1] == heldout_problems(("arith",), 1)[0].prompt
    lines = shots.split("\n")
    assert "" not in lines and lines[0].startswith("arith ") and sum(x.startswith("arith ") for x in lines) == 2
    assert [x.startswith("#") for x in lines].count(True) == 2  # two solved problems, each ending on its result
