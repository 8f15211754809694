"""Each user mistake of issue 16's table, through the CLIs: exit code 2, one line `<prog>: error: ...` naming
the input and the fix, and nothing written (the temp folder, which is also the working directory, unchanged)."""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from learn2pd import atomic
from learn2pd.cli import build_parser
from learn2pd.cli import main as learn2pd
from learn2pd.filters.models import FilterConfig, build_filter
from learn2pd.traces.cli import main as collect
from learn2pd.trainers.train_filter import main as train

ROOT = Path(__file__).resolve().parents[1]
PROG = {learn2pd: "learn2pd", collect: "collect-traces", train: "train-filter"}


def refuse_weights(monkeypatch) -> None:
    """The mistake must be caught from config files alone: loading the weights fails the test."""
    from learn2pd.models import loading

    def refuse(*args, **kwargs):
        raise AssertionError("the weights loaded before the mistake was caught")

    monkeypatch.setattr(loading, "load_model", refuse)


@dataclass
class Ctx:
    tmp: Path
    model: Path
    monkeypatch: pytest.MonkeyPatch

    def protect(self) -> Path:
        """A checkpoints/ folder of the test's own, guarded like the repo's, holding one filter."""
        ckpt = self.tmp / "checkpoints"
        self.filter(ckpt / "flt")
        self.monkeypatch.setattr(atomic, "CHECKPOINTS", ckpt)
        return ckpt

    def read_only(self, name: str) -> Path:
        """A folder that cannot be written: simulated, since root ignores permission bits."""
        ro = self.tmp / name
        ro.mkdir()
        real = os.access
        self.monkeypatch.setattr(os, "access", lambda p, mode, **kw: (not Path(p).resolve().is_relative_to(ro))
                                 and real(p, mode, **kw))
        return ro

    def filter(self, path: Path, kind="learn2pd", block_length=8, features=None, model_type="llada") -> Path:
        torch.manual_seed(0)
        build_filter(FilterConfig(kind=kind, block_length=block_length, hidden=8, features=features,
                                  model_type=model_type)).save_pretrained(path)
        return path

    def no_weights(self) -> None:
        refuse_weights(self.monkeypatch)

    def file(self, name: str, text: str) -> Path:
        (self.tmp / name).write_text(text)
        return self.tmp / name


GEN = ["--gen-length", "16", "--block-length", "8"]


# Each case: (entry point, argv, words the message must hold). --model /no/such in a case shows the mistake
# is caught before the model loads (else the message would be about the model).
def case_filter_config_into_checkpoints(c):
    ckpt = c.protect()
    return train, ["--config", ROOT / "configs/filter/tiny.yaml", "--out", ckpt / "flt", "--wandb", "false"], [
        "out", "checkpoints", "--overwrite true"]


def case_collect_into_checkpoints(c):
    return collect, ["--out", c.protect() / "traces", "--model", "/no/such"], ["checkpoints", "--overwrite true"]


def case_evaluate_output_into_checkpoints(c):
    return learn2pd, ["evaluate", "--output", c.protect() / "r.json", "--model", "/no/such"], [
        "--output", "checkpoints", "--overwrite"]


def case_demo_into_checkpoints(c):
    return learn2pd, ["demo", "--out", c.protect() / "demo"], ["--out", "checkpoints", "--overwrite"]


def case_model_weights_truncated(c):
    import shutil

    model = c.tmp / "model"
    shutil.copytree(c.model, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:2000])
    return learn2pd, ["generate", "--model", model, "--prompt", "x", *GEN], [
        str(weights), "corrupted or truncated", "again"]


def case_learned_path_is_a_model(c):
    return learn2pd, ["generate", "--model", "/no/such", "--prompt", "x", "--policy", f"learned:path={c.model}"], [
        str(c.model), "a model, not a filter", "train-filter"]


def case_filter_weights_truncated(c):
    flt = c.filter(c.tmp / "flt")
    (flt / "model.safetensors").write_bytes(b"\x10\x00")
    return learn2pd, ["generate", "--model", "/no/such", "--prompt", "x", "--policy", f"learned:path={flt}"], [
        str(flt / "model.safetensors"), "corrupted or truncated"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without CUDA")
def case_cuda_without_cuda(c):
    return learn2pd, ["generate", "--device", "cuda", "--prompt", "x", "--model", "/no/such"], [
        "--device cuda", "no CUDA", "--device cpu"]


def case_prompt_not_utf8(c):
    prompt = b"sort \xff 2".decode("utf-8", "surrogateescape")  # how Python's argv holds such bytes
    return learn2pd, ["generate", "--model", c.model, "--prompt", prompt], ["prompt #0", "not UTF-8", "0xff"]


def case_tasks_jsonl_empty(c):
    tasks = c.file("empty.jsonl", "\n")
    return learn2pd, ["evaluate", "--tasks", tasks, "--model", "/no/such"], [str(tasks), "no problems"]


def case_tasks_jsonl_line_2_malformed(c):
    tasks = c.file("bad.jsonl", '{"question": "a", "answer": "1"}\n{"question": "b" "answer": "2"}\n')
    return learn2pd, ["evaluate", "--tasks", tasks, "--model", "/no/such"], [f"{tasks}:2 ", "not valid JSON"]


def case_evaluate_output_is_a_folder(c):
    (c.tmp / "res").mkdir()
    return learn2pd, ["evaluate", "--output", c.tmp / "res", "--model", "/no/such"], [
        "--output", "is a folder, not a file"]


def case_evaluate_output_read_only(c):
    return learn2pd, ["evaluate", "--output", c.read_only("ro") / "r.json", "--model", "/no/such"], [
        "--output", "not writable"]


def case_train_filter_out_read_only(c):
    return train, ["--out", c.read_only("ro") / "flt", "--traces", "/no/such", "--wandb", "false"], [
        "out", "not writable"]


def case_threshold_not_a_number(c):
    return learn2pd, ["generate", "--prompt", "x", "--policy", "threshold:tau=abc"], ["tau", "'abc'"]


def case_unknown_policy_lists_learned(c):
    return learn2pd, ["evaluate", "--policies", "vanilla,greedy"], ["unknown policy 'greedy'", "learned"]


def case_collect_zero_prompts(c):
    return collect, ["--out", c.tmp / "t", "--num-prompts", "0", "--model", "/no/such"], [
        "--num-prompts must be a whole number > 0, got 0"]


def case_collect_bad_model(c):
    return collect, ["--out", c.tmp / "t", "--model", c.tmp / "none"], ["no model folder"]


def case_collect_bad_jsonl(c):
    tasks = c.file("bad.jsonl", "{\n")
    return collect, ["--out", c.tmp / "t", "--tasks", tasks, "--model", c.model], [f"{tasks}:1 ", "not valid JSON"]


def case_train_filter_on_empty_folder(c):
    (c.tmp / "traces").mkdir()
    return train, ["--traces", c.tmp / "traces", "--out", c.tmp / "flt", "--wandb", "false"], [
        f"no merged traces at {c.tmp / 'traces'}", f"collect-traces --out {c.tmp / 'traces'}"]


def case_train_filter_on_killed_collection(c):
    (c.tmp / "traces" / "shards" / "rank0-00000").mkdir(parents=True)
    c.file("traces/run.json", "{}\n")
    return train, ["--traces", c.tmp / "traces", "--out", c.tmp / "flt", "--wandb", "false"], [
        "no merged traces at", "run or finish"]


def case_filter_folder_as_model(c):
    flt = c.filter(c.tmp / "flt")
    return learn2pd, ["generate", "--model", flt, "--prompt", "x"], [
        f"{flt} is a learn2pd filter, not a model", f"learned:path={flt}"]


def case_prompt_empty(c):
    return learn2pd, ["generate", "--model", c.model, "--prompt", "ok", "--prompt", "  "], ["prompt #1 is empty"]


def case_prompt_outside_tokenizer(c):
    return learn2pd, ["generate", "--model", c.model, "--prompt", "sort 5 2 🙂 9"], [
        "prompt #0", "unknown", "'🙂'", "remove them"]


def case_learn2pd_filter_other_block(c):
    flt = c.filter(c.tmp / "flt", block_length=16)
    return learn2pd, ["generate", "--model", c.model, "--prompt", "x", "--policy", f"learned:path={flt}", *GEN], [
        f"filter {flt} was trained for blocks of 16", "MLP", "--block-length 16"]


def case_positionwise_filter_with_pos_in_block_shorter_block(c):
    flt = c.filter(c.tmp / "flt", "positionwise", 16, ["confidence", "pos_in_block"])
    return learn2pd, ["generate", "--model", c.model, "--prompt", "x", "--policy", f"learned:path={flt}", *GEN], [
        f"filter {flt}", "pos_in_block", "--block-length 16"]


def case_positionwise_filter_with_pos_in_block_longer_block(c):
    # without pos_in_block a positionwise filter serves any block length (tests/test_block_lengths.py)
    flt = c.filter(c.tmp / "flt", "positionwise", 4, ["confidence", "pos_in_block"])
    return learn2pd, ["generate", "--model", c.model, "--prompt", "x", "--policy", f"learned:path={flt}", *GEN], [
        f"filter {flt}", "window would not cover", "--block-length 4"]


# Data loss: a folder or file a tool did not create is never replaced or deleted (the tree check below).
def someone_elses(c, name="mine") -> Path:
    c.file("notes.txt", "keep me")
    (c.tmp / name).mkdir()
    (c.tmp / "notes.txt").rename(c.tmp / name / "notes.txt")
    return c.tmp / name


def case_train_filter_out_holds_other_files(c):
    return train, ["--out", someone_elses(c), "--traces", "/no/such", "--wandb", "false"], [
        "already holds files that are not a learn2pd filter (notes.txt)", "--overwrite true"]


def case_collect_out_holds_other_files(c):
    return collect, ["--out", someone_elses(c), "--model", "/no/such"], [
        "not a trace collection (notes.txt)", "--overwrite true"]


def case_demo_out_holds_other_files(c):
    return learn2pd, ["demo", "--out", someone_elses(c)], ["--out", "not a demo's output (notes.txt)", "--overwrite"]


def case_demo_bad_argument_keeps_earlier_traces(c):
    (c.tmp / "demo" / "traces" / "shards").mkdir(parents=True)
    c.file("demo/traces/run.json", "{}\n")
    return learn2pd, ["demo", "--out", c.tmp / "demo", "--num-traces", "0"], [
        "argument --num-traces: must be a whole number > 0, got 0"]


def case_evaluate_output_named_like_the_table(c):
    return learn2pd, ["evaluate", "--output", c.tmp / "r.md", "--model", "/no/such"], [
        "--output", "name the JSON", "r.json"]


def case_evaluate_output_over_a_file_of_the_user(c):
    c.file("r.png", "not ours")
    return learn2pd, ["evaluate", "--output", c.tmp / "r.json", "--model", "/no/such"], [
        "r.png exists and is not an earlier evaluation's", "--overwrite"]


# Typed validation: a wrong type, range, choice or key in a file or flag names where it came from, the value
# and what is allowed, before the model loads (--model /no/such shows it).
def case_collect_yaml_wrong_type(c):
    cfg = c.file("c.yaml", "num_prompts: eight\n")
    return collect, ["--config", cfg, "--model", "/no/such"], [
        f"{cfg}: num_prompts must be a whole number > 0, got 'eight'"]


def case_collect_yaml_is_a_list(c):
    cfg = c.file("c.yaml", "- num_prompts: 8\n")
    return collect, ["--config", cfg], [str(cfg), "key: value", "got a list"]


def case_collect_yaml_invalid(c):
    cfg = c.file("c.yaml", "num_prompts: 8\nmode: [oracle\n")
    return collect, ["--config", cfg], [f"{cfg}:3 is not valid YAML"]


def case_collect_flag_not_a_choice(c):
    return collect, ["--out", c.tmp / "t", "--cache", "full", "--model", "/no/such"], [
        "--cache must be one of none, prefix, dual, got 'full'"]


def case_train_filter_misspelt_filter_key(c):
    return train, ["--traces", "/no/such", "--filter", "{kind: positionwise, hiden: 8}"], [
        "filter: unknown keys ['hiden']", "known: kind"]


def case_train_filter_filter_not_a_mapping(c):
    return train, ["--traces", "/no/such", "--filter", "positionwise"], ["--filter must be a mapping"]


def case_train_filter_epochs_zero(c):
    return train, ["--traces", "/no/such", "--epochs", "0"], ["--epochs must be a whole number > 0, got 0"]


def case_train_filter_unknown_target(c):
    return train, ["--traces", "/no/such", "--target", "eos"], ["--target must be one of filter, eot, got 'eos'"]


def case_filter_config_does_not_match_its_weights(c):
    flt = c.filter(c.tmp / "flt")
    cfg = yaml.safe_load((flt / "config.json").read_text())  # JSON is YAML
    (flt / "config.json").write_text(json.dumps({**cfg, "hidden": 16}))
    return learn2pd, ["generate", "--model", "/no/such", "--prompt", "x", "--policy", f"learned:path={flt}"], [
        f"{flt / 'model.safetensors'} does not match {flt / 'config.json'}", "retrain"]


def case_generate_filter_of_another_family(c):
    c.no_weights()
    flt = c.filter(c.tmp / "flt", model_type="Dream")
    return learn2pd, ["generate", "--model", c.model, "--prompt", "x", "--policy", f"learned:path={flt}", *GEN], [
        str(flt), "trained on a 'Dream' model, not 'llada'", "train a filter for this model"]


def case_evaluate_filter_for_another_block_length(c):
    c.no_weights()
    flt = c.filter(c.tmp / "flt", block_length=8)  # its MLP reads exactly 8 positions
    return learn2pd, ["evaluate", "--model", c.model, "--tasks", "arith", "--num-samples", "2", "--policies",
                      f"vanilla,learned:path={flt}", "--gen-length", "16", "--block-length", "16"], [
        str(flt), "blocks of 8, decoding uses 16", "--block-length 8"]


def case_calibrate_filter_of_another_family(c):
    c.no_weights()
    flt = c.filter(c.tmp / "flt", model_type="Dream")
    return learn2pd, ["calibrate", "--model", c.model, "--filter", flt, "--tasks", "val:short", "--block-lengths",
                      "8"], [str(flt), "trained on a 'Dream' model", "train a filter for this model"]


def case_generate_with_the_oracle(c):
    c.no_weights()
    return learn2pd, ["generate", "--model", c.model, "--prompt", "x", "--policy", "oracle+eotp", *GEN], [
        "'oracle+eotp'", "a bound, not a decoder", "evaluate --policies vanilla,oracle"]


@pytest.mark.parametrize("spec, needle", [
    ("learned+oracle", "'oracle' is a bound, not a fallback"),
    ("learned:threshold=1.5", "threshold must be a number in [0, 1], got 1.5"),
    ("localleap:radius=-1", "radius must be a whole number >= 0, got -1"),
    ("adablock:window=-1", "window must be a number > 0, got -1"),
    ("adablock:b0=abc", "b0 must be a whole number > 0 (or null), got 'abc'"),
    ("vanilla+eotp:drop=maybe", "drop must be true or false"),
])
def test_plan_parameter_out_of_range(spec, needle, capsys):
    assert learn2pd(["generate", "--model", "/no/such", "--prompt", "x", "--policy", spec]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_eotp_drop_false_keeps_the_cut_positions():
    from learn2pd.decoding.plan import make_plan

    assert make_plan("vanilla+eotp:drop=false").eotp_drop is False
    assert make_plan("vanilla+eotp:drop=true").eotp_drop is True and make_plan("vanilla+eotp").eotp_drop is True


def case_gen_length_zero(c):
    return learn2pd, ["generate", "--model", "/no/such", "--prompt", "x", "--gen-length", "0"], [
        "argument --gen-length: must be a whole number > 0, got 0"]


def case_batch_size_zero(c):
    return learn2pd, ["evaluate", "--model", "/no/such", "--batch-size", "0"], [
        "argument --batch-size: must be a whole number > 0, got 0"]


def case_device_not_supported(c):
    return learn2pd, ["generate", "--model", "/no/such", "--prompt", "x", "--device", "mps"], [
        "--device mps", "cpu, cuda or cuda:N"]


def case_policies_name_nothing(c):
    return learn2pd, ["evaluate", "--model", "/no/such", "--policies", ","], ["--policies ','", "names no policy"]


def case_fewshot_more_than_the_pool(c):
    return learn2pd, ["evaluate", "--model", "/no/such", "--num-fewshot", "1000"], ["--num-fewshot must be in [0, 256]"]


def case_fewshot_on_a_jsonl(c):
    tasks = c.file("t.jsonl", '{"question": "a", "answer": "1"}\n')
    return learn2pd, ["evaluate", "--model", "/no/such", "--tasks", tasks, "--num-fewshot", "2"], [
        "--num-fewshot 2 applies to the built-in suite's families only"]


def case_jsonl_answer_null(c):
    tasks = c.file("t.jsonl", '{"question": "a", "answer": "1"}\n{"question": "b", "answer": null}\n')
    return learn2pd, ["evaluate", "--model", "/no/such", "--tasks", tasks], [
        f"{tasks}:2: answer must be text or a number", "None"]


def case_jsonl_question_a_number(c):
    tasks = c.file("t.jsonl", '{"question": 12, "answer": "1"}\n')
    return learn2pd, ["evaluate", "--model", "/no/such", "--tasks", tasks], [
        f"{tasks}:1: question must be text, got 12"]


def case_traces_metadata_corrupt(c):
    (c.tmp / "traces" / "traces").mkdir(parents=True)
    c.file("traces/traces/metadata.json", "{not json")
    c.file("traces/traces/dataset_dict.json", '{"splits": ["steps", "sequences"]}')
    return train, ["--traces", c.tmp / "traces", "--out", c.tmp / "flt", "--wandb", "false"], [
        f"{c.tmp / 'traces' / 'traces' / 'metadata.json'} is not valid JSON"]


# One prompt check for every entry point (learn2pd.tasks.prompting.check_prompts), with the tokenizer alone.
def case_evaluate_jsonl_prompt_outside_tokenizer(c):
    tasks = c.file("t.jsonl", '{"question": "sort 1 2", "answer": "1 2"}\n{"question": "sort 🙂 2", "answer": "2"}\n')
    return learn2pd, ["evaluate", "--model", c.model, "--tasks", tasks, *GEN], [
        f"{tasks}:2 'sort 🙂 2' has characters this model's tokenizer maps to unknown ('🙂')"]


def case_evaluate_prompt_over_the_context(c):
    tasks = c.file("t.jsonl", '{"question": "%s", "answer": "1"}\n' % ("1 " * 45))
    return learn2pd, ["evaluate", "--model", c.model, "--tasks", tasks, *GEN], [
        f"{tasks}:1 is 92 tokens, and with gen_length 16 exceeds the model's context of 96", "--gen-length"]


def case_generate_prompt_over_the_context(c):
    return learn2pd, ["generate", "--model", c.model, "--prompt", "1" * 60, "--gen-length", "40", "--block-length",
                      "8"], ["prompt #0 is 62 tokens, and with gen_length 40 exceeds the model's context of 96"]


def case_collect_jsonl_prompt_outside_tokenizer(c):
    tasks = c.file("t.jsonl", '{"question": "sort 🙂 2", "answer": "2"}\n')
    return collect, ["--out", c.tmp / "t", "--tasks", tasks, "--model", c.model], [
        f"{tasks}:1 'sort 🙂 2' has characters this model's tokenizer maps to unknown"]


def case_train_filter_traces_is_a_file(c):
    return train, ["--traces", c.file("t.arrow", "x"), "--out", c.tmp / "flt", "--wandb", "false"], [
        "is a file: pass the folder collect-traces wrote"]


def case_collect_resume_with_other_settings(c):
    (c.tmp / "t" / "shards" / "rank0-00000").mkdir(parents=True)
    run = {"model": "/no/such", "tasks": "train:suite", "num_fewshot": 0, "question_field": "question",
           "answer_field": "answer", "split": "train", "mode": "reference", "reference_plan": "vanilla",
           "batch_size": 64, "devices": 1, "decoding": {}}
    c.file("t/run.json", json.dumps(run))  # refused before the model loads (it does not exist)
    return collect, ["--out", c.tmp / "t", "--model", "/no/such"], ["holds traces collected with a different",
                                                                     "mode", "pass a new --out"]


def case_evaluate_jsonl_blank_question(c):
    tasks = c.file("t.jsonl", '{"question": "sort 1 2", "answer": "1 2"}\n{"question": "  ", "answer": "2"}\n')
    return learn2pd, ["evaluate", "--model", c.model, "--tasks", tasks, *GEN], [f"{tasks}:2 is empty"]


CASES = [v for k, v in list(globals().items()) if k.startswith("case_")]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns if p.is_file() else None) for p in root.rglob("*")}


@pytest.mark.parametrize("case", [pytest.param(c, marks=getattr(c, "pytestmark", []), id=c.__name__[5:])
                                  for c in CASES])
def test_mistake_is_one_line_exit_2_and_writes_nothing(case, tmp_path, random_ckpt, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # outputs with relative default paths would land here, and be seen
    main, argv, needles = case(Ctx(tmp_path, random_ckpt, monkeypatch))
    before = _tree(tmp_path)
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln and not ln.startswith("Loading weights")]  # transformers' bar
    assert len(lines) == 1 and lines[0].startswith(f"{PROG[main]}: error: "), err
    assert all(n in lines[0] for n in needles), lines[0]
    assert _tree(tmp_path) == before


def test_shipped_filter_configs_write_under_outputs():
    from learn2pd.trainers.train_filter import TrainFilterConfig

    outs = [yaml.safe_load(p.read_text())["out"] for p in sorted((ROOT / "configs" / "filter").glob("*.yaml"))]
    assert outs and all(o.startswith("outputs/") for o in outs + [TrainFilterConfig.out])


def test_overwrite_lets_a_tool_write_into_checkpoints(tmp_path, monkeypatch, capsys):
    ckpt = Ctx(tmp_path, tmp_path, monkeypatch).protect()
    assert atomic.check_output(ckpt / "flt", "out", folder=True, overwrite=True) == ckpt / "flt"
    # past the guard, the next check speaks: here the missing traces
    assert train(["--out", str(ckpt / "flt"), "--overwrite", "true", "--traces", str(tmp_path / "none"),
                  "--wandb", "false"]) == 2
    assert "no merged traces" in capsys.readouterr().err
    assert train(["--out", str(tmp_path / "x"), "--overwrite", "yes please"]) == 2
    assert "overwrite must be true or false" in capsys.readouterr().err


def test_positionwise_filter_without_block_features_runs_at_a_shorter_block(tmp_path, random_ckpt, capsys):
    flt = Ctx(tmp_path, random_ckpt, None).filter(tmp_path / "flt", "positionwise", 16, ["confidence", "margin"])
    assert learn2pd(["generate", "--model", str(random_ckpt), "--prompt", "sort 1 2", "--policy",
                     f"learned:path={flt}", *GEN]) == 0


def test_every_flag_has_help():
    sub = next(a for a in build_parser()._actions if a.choices and "generate" in a.choices)
    for name, parser in sub.choices.items():
        missing = [a.dest for a in parser._actions if not a.help]
        assert not missing, f"{name}: {missing}"


def test_library_writers_refuse_a_folder_that_is_not_theirs(tmp_path):
    from learn2pd.evaluation.report import report_paths

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    flt = Ctx(tmp_path, tmp_path, None).filter(tmp_path / "flt")
    with pytest.raises(FileExistsError, match="not a learn2pd filter"):
        build_filter(FilterConfig(block_length=8, hidden=8)).save_pretrained(mine)
    assert (mine / "notes.txt").read_text() == "keep me"
    build_filter(FilterConfig(block_length=8, hidden=8)).save_pretrained(flt)  # an earlier filter is replaced
    build_filter(FilterConfig(block_length=8, hidden=8)).save_pretrained(mine, overwrite=True)
    assert sorted(os.listdir(mine)) == ["config.json", "model.safetensors"]
    (tmp_path / "r.json").write_text('{"results": [], "config": {}}')  # an earlier evaluation's: replaced
    (tmp_path / "r.md").write_text("| table |")
    assert report_paths(tmp_path / "r.json")[1] == tmp_path / "r.md"


def test_jsonl_with_a_byte_order_mark_loads(tmp_path):
    from learn2pd.tasks.loaders import load_problems

    tasks = tmp_path / "t.jsonl"
    tasks.write_text('\ufeff{"question": "a", "answer": 1}\n', encoding="utf-8")
    assert [(p.prompt, p.answer) for p in load_problems(str(tasks), 5)] == [("a", "1")]


def test_lm_eval_model_arguments_are_typed():
    from learn2pd.harness.lm import Learn2PDLM

    for args, needle in (("gen_length=abc", "model argument gen_length must be a whole number > 0 (or null)"),
                         ("trust_remote_code=maybe", "model argument trust_remote_code must be true or false"),
                         ("cache=full", "model argument cache must be one of none, prefix, dual"),
                         ("batch_size=0", "model argument batch_size must be a whole number > 0")):
        with pytest.raises(ValueError, match=re.escape(needle)):
            Learn2PDLM.create_from_arg_string(f"pretrained=/no/such,{args}")


@pytest.mark.parametrize("args, needle", [
    (f"plan=learned+eotp,filter={ROOT / 'checkpoints' / 'tiny-dream-filter'}",
     f"filter {ROOT / 'checkpoints' / 'tiny-dream-filter'} was trained on a 'Dream' model, not 'llada'"),
    ("plan=oracle+eotp", "plan 'oracle+eotp' commits against a reference (the oracle is a bound, not a decoder)"),
])
def test_lm_eval_model_refuses_a_plan_before_the_weights(args, needle, monkeypatch):
    from learn2pd.harness.lm import Learn2PDLM

    refuse_weights(monkeypatch)
    with pytest.raises(ValueError, match=re.escape(needle)):
        Learn2PDLM.create_from_arg_string(f"{args},gen_length=64")


def test_pretrain_config_mistakes_are_one_line(tmp_path, capsys):
    from learn2pd.trainers.pretrain_tiny import main as pretrain

    base = (ROOT / "configs/pretrain/tiny.yaml").read_text()
    for extra, needle in (("max_step: 5\n", "unknown keys ['max_step']"), ("lr: fast\n", "lr must be a number > 0")):
        cfg = tmp_path / "p.yaml"
        cfg.write_text(base + extra)
        assert pretrain(["--config", str(cfg), "--out", str(tmp_path / "m")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "m").exists()


def test_a_second_collection_into_one_folder_refuses_naming_the_first(tmp_path, capsys):
    import subprocess

    from learn2pd.traces import store

    first = subprocess.Popen(["sleep", "60"])  # stands for a running collection
    try:
        (tmp_path / "t").mkdir()
        (tmp_path / "t" / "lock").write_text(f"{first.pid}\n")
        assert collect(["--out", str(tmp_path / "t"), "--model", "/no/such"]) == 2
        line = capsys.readouterr().err.strip()
        assert line == (f"collect-traces: error: {tmp_path / 't'} is being collected into by process {first.pid}: "
                        "wait for it to finish (a rerun then resumes), or pass another --out")
    finally:
        first.kill()
        first.wait()
    with store.locked(tmp_path / "t"):  # its process is gone: the stale lock is taken over
        assert (tmp_path / "t" / "lock").read_text() == f"{os.getpid()}\n"
    assert not (tmp_path / "t" / "lock").exists()


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, random_ckpt, monkeypatch, capsys):
    from learn2pd.traces import collector

    def interrupted(*a, **k):
        assert (tmp_path / "t" / "lock").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(collector, "_collect_rank", interrupted)
    assert collect(["--out", str(tmp_path / "t"), "--model", str(random_ckpt), "--num-prompts", "2",
                    "--gen-length", "16", "--block-length", "8"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1:] == [
        "collect-traces: interrupted; rerun the same command to resume"]
    assert not (tmp_path / "t" / "lock").exists()  # released: the rerun is not refused
    import learn2pd.cli as cli

    monkeypatch.setattr(cli, "cmd_generate", lambda args: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert learn2pd(["generate", "--prompt", "x"]) == 130
    assert capsys.readouterr().err.strip() == "learn2pd: interrupted"


def test_an_lm_eval_task_decodes_in_its_own_answer_budget():
    from learn2pd.tasks.loaders import load_problems
    from learn2pd.tasks.suite import problems_gen_length

    # learn2pd_long's tasks name max_gen_toks 256: at the short default (128) table answers were cut
    assert problems_gen_length(load_problems("lm_eval:learn2pd_long", 2), 32) == 256
    assert problems_gen_length(load_problems("lm_eval:learn2pd_long", 2), 96) == 288  # whole blocks
    assert problems_gen_length(load_problems("short", 3), 32) == 128


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_plans_are_checked_against_the_spec_the_loaded_model_has(name):
    # what check_plans reads from config.json alone is what decoding then uses
    from learn2pd.models.loading import load_model, load_tokenizer, model_spec

    path = ROOT / "checkpoints" / name
    assert model_spec(path, load_tokenizer(path)) == load_model(path)[2]
