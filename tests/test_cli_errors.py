"""Mistakes a user can make get one clear line on stderr and exit code 2, never a traceback."""

import pytest

from learn2pd.cli import main


@pytest.mark.parametrize("argv, needle", [
    (["generate", "--model", "/no/such/model", "--prompt", "x"], "no model folder"),
    (["generate", "--prompt", "x", "--gen-length", "100", "--block-length", "32"], "not a multiple of block_length"),
    (["generate", "--prompt", "x", "--policy", "greedy"], "unknown policy"),
    (["evaluate", "--policies", "vanilla,fast"], "unknown policy"),
    (["evaluate", "--tasks", "missing.jsonl"], "no task file"),
    (["evaluate", "--tasks", "algebra"], "unknown task family"),
])
def test_user_errors_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_folder_without_config_is_named(tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path), "--prompt", "x"]) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_bad_dtype_is_named(capsys):
    assert main(["generate", "--prompt", "x", "--dtype", "float8"]) == 2
    assert "unknown dtype 'float8'" in capsys.readouterr().err


def test_auto_dtype_follows_the_hardware():
    import torch

    from learn2pd.models.loading import resolve_dtype

    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype("bf16") == torch.bfloat16 and resolve_dtype(torch.float16) == torch.float16


def test_policy_lists_keep_multi_parameter_specs_whole():
    from learn2pd.cli import split_policies

    assert split_policies("vanilla,localleap:kappa=0.8,tau=0.6,radius=2+eotp, threshold:tau=0.7") == [
        "vanilla", "localleap:kappa=0.8,tau=0.6,radius=2+eotp", "threshold:tau=0.7"]


def test_trainer_flags_are_typed_by_yaml_and_strings_stay_text(tmp_path):
    from learn2pd.traces.cli import build_config as collect_config
    from learn2pd.trainers.train_filter import build_config as filter_config

    cfg = collect_config(["--config", "configs/collect/tiny.yaml", "--num-prompts", "4", "--steps", "null",
                          "--out", "0123"])
    assert cfg.num_prompts == 4 and cfg.steps is None and cfg.out == "0123" and cfg.block_length == 32
    cfg = filter_config(["--config", "configs/filter/tiny.yaml", "--filter", "{kind: positionwise}", "--lr", "1e-2"])
    assert cfg.filter == {"kind": "positionwise"} and cfg.lr == 0.01
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown keys \\['epochz'\\]"):
        filter_config(["--config", str(bad)])


@pytest.mark.parametrize(("module", "sample"), [("learn2pd.traces.cli", "prompts to record (default: 1000)"), (
    "learn2pd.trainers.train_filter", "the best one by validation loss is exported (default: 40)")])
def test_every_config_flag_says_what_it_does_and_its_default(module, sample, capsys):
    import dataclasses
    import importlib
    import re

    mod = importlib.import_module(module)
    with pytest.raises(SystemExit):
        mod.build_config(["--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    cls = mod.CollectConfig if hasattr(mod, "CollectConfig") else mod.TrainFilterConfig
    for f in dataclasses.fields(cls):
        flag = f"--{f.name.replace('_', '-')} {f.name.upper()} "
        described = text.split(flag, 1)[1].split(" --", 1)[0]
        assert f.metadata.get("help") and "(default: " in described, f.name
    assert sample in text


def test_collect_traces_defaults_are_the_shipped_config():
    """`collect-traces --help` shows the defaults configs/collect/tiny.yaml runs with: no flag differs."""
    import dataclasses

    import yaml

    from learn2pd.traces import CollectConfig
    from tests.conftest import ROOT

    shipped = yaml.safe_load((ROOT / "configs" / "collect" / "tiny.yaml").read_text())
    defaults = dataclasses.asdict(CollectConfig())
    assert {k: v for k, v in shipped.items() if defaults[k] != v} == {}
