"""`learn2pd evaluate` end to end on a tiny random checkpoint: outputs, schema, oracle and AUP wiring."""

import json

import pytest

from learn2pd.cli import main
from learn2pd.decoding.config import DecodeConfig


def test_evaluate_writes_json_table_and_plot(random_ckpt, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    rc = main(["evaluate", "--model", str(random_ckpt), "--tasks", "arith,rev", "--num-samples", "6",
               "--policies", "threshold:tau=0.5,oracle,threshold:tau=0.9,vanilla+eotp", "--gen-length", "32",
               "--block-length", "16", "--batch-size", "4", "--output", str(out), "--quiet"])
    assert rc == 0
    report = json.loads(out.read_text())
    names = [r["policy"] for r in report["results"]]
    assert names[0] == "vanilla" and "oracle" in names  # the oracle pulled in vanilla as its reference
    by = {r["policy"]: r for r in report["results"]}
    for r in report["results"]:
        for key in ("accuracy", "nfe_mean", "tpf", "tokens_per_s", "latency_s_mean", "latency_s_p95",
                    "speedup_nfe", "speedup_time", "aup", "per_family"):
            assert key in r, key
        assert r["tpf"] == pytest.approx(32 / r["nfe_mean"])
    assert by["vanilla"]["nfe_mean"] == 32 and by["vanilla"]["speedup_nfe"] == 1.0
    assert by["oracle"]["nfe_mean"] < 32 and by["oracle"]["accuracy"] == by["vanilla"]["accuracy"]
    assert by["threshold:tau=0.5"]["nfe_mean"] <= by["threshold:tau=0.9"]["nfe_mean"]
    assert set(report["aup"]) == {"vanilla", "oracle", "threshold", "vanilla+eotp"}
    assert report["config"]["gen_length"] == 32 and report["config"]["num_samples"] == 6
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "| policy |" in out.with_suffix(".md").read_text()
    assert "| oracle |" in capsys.readouterr().out


def test_evaluate_with_a_cache_records_it_and_feeds_fewer_positions(random_ckpt, tmp_path):
    runs = {}
    for cache in ("none", "dual"):
        out = tmp_path / cache / "results.json"
        assert main(["evaluate", "--model", str(random_ckpt), "--tasks", "arith", "--num-samples", "4",
                     "--policies", "vanilla", "--gen-length", "32", "--block-length", "16", "--cache", cache,
                     "--output", str(out), "--quiet"]) == 0
        runs[cache] = json.loads(out.read_text())
    assert runs["dual"]["config"]["cache"] == "dual"
    none, dual = runs["none"]["results"][0], runs["dual"]["results"][0]
    assert dual["nfe_mean"] == none["nfe_mean"] == 32 and dual["positions_mean"] < none["positions_mean"] / 2
    assert len(dual["records"]) == 4 and {"output", "correct", "nfe", "positions"} <= set(dual["records"][0])
    # answer_tokens: the tokens before the first end token; the character tokenizer maps one char per token
    for rec in dual["records"]:
        assert rec["answer_tokens"] == len(rec["output"]) and 0 <= rec["answer_tokens"] <= 32


def test_generate_prints_text_and_nfe(random_ckpt, capsys):
    assert main(["generate", "--model", str(random_ckpt), "--prompt", "rev ab", "--prompt", "sort 3 1",
                 "--gen-length", "32", "--block-length", "32", "--policy", "threshold", "--threshold", "0.7"]) == 0
    out = capsys.readouterr().out
    # one block per prompt, in the given order, each with its header and its plan's NFE line
    first, second = out.index("=== [1/2] rev ab\n"), out.index("\n\n=== [2/2] sort 3 1\n")
    assert first == 0 and out.count("=== [") == 2
    blocks = [out[:second], out[second:]]
    assert all(b.count("NFE") == 1 and "threshold:tau=0.7" in b for b in blocks)


def test_generate_json_is_one_object_per_prompt(random_ckpt, capsys):
    import json

    args = ["generate", "--model", str(random_ckpt), "--prompt", "rev ab", "--prompt", "sort 3 1",
            "--gen-length", "32", "--block-length", "32", "--policy", "threshold:tau=0.7"]
    assert main(args) == 0
    readable = capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["rev ab", "sort 3 1"]
    assert all(r["plan"] == "threshold:tau=0.7" and r["tokens_per_forward"] == 32 / r["nfe"] for r in rows)
    assert all(f"NFE {r['nfe']}," in readable for r in rows)  # the same decode as the readable output


def test_prompt_longer_than_context(random_ckpt, capsys):
    assert main(["generate", "--model", str(random_ckpt), "--prompt", "rev " + "a" * 80, "--gen-length", "32",
                 "--block-length", "32"]) == 2
    assert "exceeds the model's context" in capsys.readouterr().err


def test_plan_families_group_sweep_points_and_keep_filters_apart():
    from learn2pd.evaluation.runner import plan_family

    assert plan_family("threshold:tau=0.7+eotp") == plan_family("threshold:tau=0.5+eotp") == "threshold+eotp"
    assert plan_family("localleap:kappa=0.8,tau=0.6+adablock:b0=16") == "localleap+adablock"
    assert plan_family("learned:threshold=0.8+eotp") == "learned+eotp"
    assert plan_family("learned:path=ckpt/pw,threshold=0.8+localleap+eotp") == "learned(pw)+localleap+eotp"


@pytest.mark.parametrize(("tasks", "region"), [("arith,rev", 128), ("arith,chain", 256)])
def test_the_default_region_fits_the_families(random_ckpt, tasks, region, capsys):
    # this checkpoint's context is 96 tokens, so either default region is refused, naming its length
    assert main(["evaluate", "--model", str(random_ckpt), "--tasks", tasks, "--num-samples", "2",
                 "--policies", "vanilla", "--quiet"]) == 2
    assert f"--gen-length {region} leaves no room for a prompt" in capsys.readouterr().err


def test_progress_moves_within_a_batch(random_ckpt):
    """on_step is called after every forward of a batch with the tokens it committed; StepProgress shows
    forwards and tokens/s so far on the bar."""
    from learn2pd.decoding.batching import StepProgress, decode_all, encode_prompts
    from learn2pd.models.loading import load_model

    model, tok, spec = load_model(random_ckpt)
    steps = []
    out = decode_all(model, tok, spec, encode_prompts(tok, ["rev ab", "sort 3 1 2"]), "threshold:tau=0.7",
                     DecodeConfig(gen_length=32, block_length=16), batch_size=8, on_step=steps.append)
    assert len(steps) == int(out.nfe.max()) and sum(steps) == sum(sum(c) for c in out.commits) == 2 * 32

    class Bar:
        postfix = ""

        def set_postfix_str(self, text):
            self.postfix = text

    bar = Bar()
    progress = StepProgress(bar, every_s=0.0)
    for committed in (3, 5):
        progress(committed)
    assert bar.postfix.startswith("forwards 2, ") and bar.postfix.endswith(" tok/s")


def test_a_cheaper_baseline_is_the_speedup_base_and_the_oracles_reference(random_ckpt):
    from learn2pd.evaluation.runner import evaluate
    from learn2pd.models.loading import load_model
    from learn2pd.tasks.loaders import load_problems

    model, tok, spec = load_model(random_ckpt)
    report = evaluate(model, tok, spec, load_problems("arith,rev", 4), ["threshold:tau=0.7", "oracle+eotp"],
                      DecodeConfig(gen_length=32, block_length=16), progress=False, baseline="vanilla+eotp")
    base, thr, oracle = report["results"]  # the baseline is added, first; plain vanilla never runs
    assert base["policy"] == "vanilla+eotp" and base["speedup_nfe"] == 1.0
    assert thr["speedup_nfe"] == base["nfe_mean"] / thr["nfe_mean"]
    # the oracle replays the baseline's answers
    assert [r["output"] for r in oracle["records"]] == [r["output"] for r in base["records"]]
