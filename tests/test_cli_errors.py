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
