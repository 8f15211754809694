"""Data-parallel evaluation on CPU processes (gloo): `learn2pd evaluate --devices 2` on Lightning Fabric and the
`learn2pd` lm-eval model under `accelerate launch` give what one process gives (outputs, grades, NFE per
problem; Monte-Carlo scores per request), with the files written once, by rank 0; the pieces they are built
from (shards, merges, lm-eval's padding, the summed cost, per-request Monte-Carlo draws); and the launch
mistakes a user can make, refused in one line before any work."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from learn2pd.cli import main
from learn2pd.decoding.config import DecodeOutput
from learn2pd.distributed import LaunchError, launch_env
from learn2pd.evaluation.parallel import merge, shard

ROOT = Path(__file__).resolve().parents[1]
GEN = ["--gen-length", "64", "--block-length", "32"]  # the short families fit in 64
PLANS = "threshold:tau=0.9,learned+eotp,oracle"  # the oracle pulls in vanilla: its reference is gathered
RECORD = ("output", "correct", "nfe", "positions", "answer_tokens")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return env | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"} | extra


def _records(result: dict) -> list[tuple]:
    return [tuple(r[k] for k in RECORD) for r in result["records"]]


def test_evaluate_on_two_processes_equals_one(tiny, tmp_path, one_thread, capsys):
    # 16 problems x 4 plans: rank 0's decodes outgrow a pipe's 64 KB, which Lightning's spawn launcher reads
    # only after the ranks exit (they travel through a file)
    args = ["evaluate", "--tasks", "short", "--num-samples", "16", "--policies", PLANS, *GEN, "--quiet"]
    assert main([*args, "--output", str(tmp_path / "one" / "results.json")]) == 0
    capsys.readouterr()
    run = subprocess.run([sys.executable, "-m", "learn2pd.cli", *args, "--devices", "2",
                          "--output", str(tmp_path / "two" / "results.json")],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert [r["policy"] for r in two["results"]] == ["vanilla", "threshold:tau=0.9", "learned+eotp", "oracle"]
    for a, b in zip(one["results"], two["results"]):
        assert _records(b) == _records(a), a["policy"]  # in the original problem order
        assert (b["accuracy"], b["nfe_mean"], b["per_family"]) == (a["accuracy"], a["nfe_mean"], a["per_family"])
        assert b["tokens_per_s"] == pytest.approx(64 * 16 / b["wall_time_s"])  # over the whole run's wall time
    assert two["processes"]["world_size"] == 2 and "processes" not in one
    # the results are written once: one table, one "wrote" line, the three files
    assert run.stdout.count("| policy |") == 1 and run.stderr.count("wrote ") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["results.json", "results.md", "results.png"]


CHOICE_TASK = """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\n"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""
CHOICES = [("sort 3 1 2", ["1 2 3", "3 2 1"], 0), ("rev abc", ["abc", "cba"], 1), ("sort 9 4 7", ["4 7 9", "9 7 4"], 0)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lm_eval_outputs(out) -> tuple[dict, dict]:
    """(decoding cost per task, per task the (doc_id, graded responses, metric) of each document by doc_id).
    The graded responses are lm-eval's first per request: its padding of a shorter shard appends copies to the
    last request's responses, as for any model."""
    [cost] = list(out.glob("**/decoding_cost_*.json"))
    samples = {}
    for f in out.glob("**/samples_*.jsonl"):
        rows = [json.loads(line) for line in f.read_text().splitlines()]
        samples[f.name.split("_20")[0]] = sorted((r["doc_id"], r["filtered_resps"], r.get("exact_match", r.get("acc")))
                                                 for r in rows)
    return json.loads(cost.read_text()), samples


def test_lm_eval_under_accelerate_equals_one_process(tmp_path, one_thread):
    # one launch (process start-up and lm-eval's import dominate its cost): a learned plan with the dual cache,
    # the most state a rank carries; the shards, merges and padding it relies on are plan-independent
    model_args = "plan=learned+eotp,cache=dual"
    from learn2pd.harness.cli import main as lm_eval_main

    data = tmp_path / "choice.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "label": y}) + "\n" for q, c, y in CHOICES))
    (tmp_path / "tiny_choice.yaml").write_text(CHOICE_TASK.format(data=data))
    # 3 documents per task over 2 ranks: rank 1 runs 1, padded by lm-eval with a copy to rank 0's 2
    args = ["--tasks", f"learn2pd_short,{tmp_path / 'tiny_choice.yaml'}", "--include_path",
            str(ROOT / "configs" / "lm_eval"), "--limit", "3", "--log_samples",
            "--model_args", f"{model_args},gen_length=64,dtype=float32,mc_num=4,batch_size=4"]
    assert lm_eval_main([*args, "--output_path", str(tmp_path / "one")]) == 0
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), "-m", "learn2pd.harness"]
    run = subprocess.run([*launch, *args, "--output_path", str(tmp_path / "two")], cwd=ROOT,
                         env=_env(HF_HOME=str(tmp_path / "hf")), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "on rank 1" in run.stderr  # lm-eval built rank 1's shard: two processes ran
    cost_one, samples_one = _lm_eval_outputs(tmp_path / "one")
    cost_two, samples_two = _lm_eval_outputs(tmp_path / "two")
    assert set(samples_two) == {"samples_learn2pd_arith", "samples_learn2pd_sort", "samples_learn2pd_rev",
                                "samples_tiny_choice"}
    assert samples_two == samples_one  # texts and grades; each choice's Monte-Carlo score and greedy check
    assert cost_two["processes"] == 2 and cost_one["processes"] == 1
    for task, c in cost_one["decoding_cost"].items():  # every rank's forwards summed, lm-eval's padding not counted
        keys = ("samples", "nfe", "positions", "answer_tokens", "loglikelihood_requests", "loglikelihood_forwards")
        assert {k: cost_two["decoding_cost"][task][k] for k in keys} == {k: c[k] for k in keys}, task
    assert cost_one["decoding_cost"]["tiny_choice"]["loglikelihood_requests"] == 6
    # rank 0 alone writes: one results file, one cost file, one cost table
    assert len(list((tmp_path / "two").glob("**/results_*.json"))) == 1
    assert run.stdout.count("| task | samples |") == 1


# -- the pieces ---------------------------------------------------------------------------------------------------


def test_shards_cover_every_problem_once_with_every_length():
    lengths = [5, 30, 7, 12, 30, 1, 9, 20, 3]
    parts = [shard(lengths, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(9))
    # dealt from the length order: each rank gets a short, a middle and a long prompt
    assert [sorted(lengths[i] for i in p) for p in parts] == [[1, 7, 20], [3, 9, 30], [5, 12, 30]]


def test_merge_restores_the_problem_order():
    def out(rows, wall, calls):
        n = len(rows)
        return DecodeOutput(torch.tensor([[r, r] for r in rows]), torch.tensor(rows) * 10, calls, [[]] * n, wall,
                            torch.tensor(rows) * 100, [str(r) for r in rows], latency_s=torch.full((n,), wall))

    merged = merge([([2, 0], out([2, 0], 1.5, 7)), ([1], out([1], 2.5, 4))], 3)
    assert merged.texts == ["0", "1", "2"] and merged.sequences[:, 0].tolist() == [0, 1, 2]
    assert merged.nfe.tolist() == [0, 10, 20] and merged.positions.tolist() == [0, 100, 200]
    assert merged.wall_time_s == 2.5 and merged.model_calls == 11 and merged.latency_s.tolist() == [1.5, 2.5, 1.5]


def test_launcher_variables():
    assert launch_env({}) is None and launch_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    torchrun = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "h"}
    assert launch_env(torchrun, needs_rank=True) == (launch := launch_env(torchrun)) and launch.rank == 3
    lightning_child = {"WORLD_SIZE": "2", "LOCAL_RANK": "1", "NODE_RANK": "0"}  # Fabric's ddp children: no RANK
    assert launch_env(lightning_child).local_rank == 1
    bad = [({"RANK": "1"}, "RANK=1 is set without WORLD_SIZE"), ({"WORLD_SIZE": "two"}, "not a positive integer"),
           ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, "RANK=2 is not below WORLD_SIZE=2"),
           ({"RANK": "0", "WORLD_SIZE": "2"}, "without MASTER_ADDR"), ({"LOCAL_RANK": "-1"}, "an integer >= 0")]
    for env, msg in bad:
        with pytest.raises(LaunchError, match=msg):
            launch_env(env)
    with pytest.raises(LaunchError, match="WORLD_SIZE=2 is set without RANK"):
        launch_env(lightning_child, needs_rank=True)  # lm-eval's ranks come from accelerate launch or torchrun


def test_lm_eval_padding_is_answered_once_and_costs_are_summed(tiny, one_thread):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from learn2pd.harness import Learn2PDLM
    from learn2pd.harness.cost import CostMeter

    model, tok, spec = tiny
    lm = Learn2PDLM(model, tokenizer=tok, spec=spec, plan="threshold:tau=0.9", gen_length=32, mc_num=4,
                    batch_size=4)
    gen = [Instance("generate_until", {}, (f"rev {w}\n", {"until": []}), 0, ("t", i, 1)) for i, w in
           enumerate(["abc", "xyz"])]
    lm._world_size = 2  # as on a rank of a launched run: lm-eval pads a shorter shard with its last request
    assert lm.generate_until([gen[0], gen[1], gen[1], gen[1]], disable_tqdm=True) == ["cba", "zyx", "zyx", "zyx"]
    ll = [Instance("loglikelihood", {}, ("sort 3 1 2\n", c), 0, ("c", i, 1)) for i, c in enumerate(["1 2 3", "3 2"])]
    scores = lm.loglikelihood([ll[0], ll[1], ll[1]], disable_tqdm=True)
    assert scores[1] == scores[2]
    cost = lm.cost.summary()
    assert cost["t"]["samples"] == 2 and cost["c"]["loglikelihood_requests"] == 2  # the copies are not counted
    # a request's Monte-Carlo score depends on its own tokens and the seed, not on the requests before it
    assert lm.loglikelihood([ll[1]], disable_tqdm=True) == [scores[1]]
    assert lm.loglikelihood([ll[1], ll[0]], disable_tqdm=True) == [scores[1], scores[0]]
    # two ranks' meters sum to one
    total = CostMeter.total([lm.cost.tasks, lm.cost.tasks]).summary()
    assert total["t"]["nfe"] == 2 * cost["t"]["nfe"] and total["t"]["nfe_per_sample"] == cost["t"]["nfe_per_sample"]


def _no_work(monkeypatch):
    import learn2pd.tasks.loaders as loaders

    def refuse(*a, **k):
        raise AssertionError("work started before the launch was checked")

    monkeypatch.setattr(loaders, "load_problems", refuse)


@pytest.mark.parametrize(("flags", "env", "gpus", "msg"), [
    (["--devices", "0"], {}, 0, "--devices 0: give the number of processes per node"),
    (["--devices", "2", "--num-nodes", "0"], {}, 0, "--num-nodes 0"),
    (["--device", "cuda", "--devices", "3"], {}, 2, "--devices 3: this machine has 2 CUDA device(s)"),
    (["--device", "cuda:1", "--devices", "2"], {}, 2, "names one GPU"),
    ([], {"RANK": "1"}, 0, "RANK=1 is set without WORLD_SIZE"),
    (["--devices", "2", "--strategy", "ddp"], {"RANK": "0", "WORLD_SIZE": "4", "MASTER_ADDR": "h"}, 0,
     "WORLD_SIZE=4 processes, but --devices 2 --num-nodes 1 make 2"),
    (["--devices", "2"], {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h"}, 0, "pass --strategy ddp"),
])
def test_launch_mistakes_are_one_line_before_any_work(monkeypatch, capsys, flags, env, gpus, msg):
    _no_work(monkeypatch)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if gpus:  # a machine with `gpus` CUDA devices
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert main(["evaluate", "--policies", "vanilla", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("learn2pd: error: ") and msg in err, err


def test_lm_eval_refuses_a_bad_launch_before_lm_eval_starts(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setitem(sys.modules, "lm_eval.__main__", None)  # importing lm-eval's CLI would fail: not reached
    assert main(["lm-eval", "--tasks", "learn2pd_rev"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "learn2pd lm-eval: error: launcher variable RANK=1 is set without WORLD_SIZE" in err
