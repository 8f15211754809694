"""Each user mistake of issue 16's table, through the CLIs: exit code 2, one line `<prog>: error: ...` naming
the input and the fix, and nothing written (the temp folder, which is also the working directory, unchanged)."""

import os
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

    def filter(self, path: Path, kind="learn2pd", block_length=8, features=None) -> Path:
        torch.manual_seed(0)
        build_filter(FilterConfig(kind=kind, block_length=block_length, hidden=8, features=features,
                                  model_type="llada")).save_pretrained(path)
        return path

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
    return collect, ["--out", c.tmp / "t", "--num-prompts", "0", "--model", "/no/such"], ["--num-prompts must be > 0"]


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


def case_positionwise_filter_longer_block(c):
    flt = c.filter(c.tmp / "flt", "positionwise", 4, ["confidence"])
    return learn2pd, ["generate", "--model", c.model, "--prompt", "x", "--policy", f"learned:path={flt}", *GEN], [
        f"filter {flt}", "window would not cover", "--block-length 4"]


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
