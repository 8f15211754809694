"""W&B tracking (learn2pd.tracking): every experiment writes an offline run a test can read back."""

from __future__ import annotations

import json

import datasets
import pytest

from learn2pd import tracking
from learn2pd.cli import main
from learn2pd.traces.schema import SEQUENCE_FEATURES, STEP_FEATURES
from learn2pd.traces.stats import trace_counts


def _run_dir(root):
    runs = sorted(root.rglob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def test_evaluate_wandb_logs_the_table_the_plot_the_config_and_the_summary(random_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "res.json"
    assert main(["evaluate", "--model", str(random_ckpt), "--tasks", "arith,rev", "--num-samples", "4",
                 "--gen-length", "32", "--block-length", "32", "--policies", "vanilla,threshold:tau=0.5",
                 "--output", str(out), "--wandb", "--wandb-dir", str(tmp_path / "wb"), "--quiet"]) == 0
    report = json.loads(out.read_text())
    run = _run_dir(tmp_path / "wb")
    table = json.loads(next(run.rglob("media/table/results_*.table.json")).read_text())
    # one row per plan, per-family columns, the figures of results.json
    assert table["columns"][:3] == ["plan", "family", "accuracy"]
    assert {"arith/accuracy", "arith/nfe_mean", "rev/accuracy", "rev/nfe_mean"} <= set(table["columns"])
    rows = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert set(rows) == {"vanilla", "threshold:tau=0.5"}
    for r in report["results"]:
        assert rows[r["policy"]]["nfe_mean"] == r["nfe_mean"]
        assert rows[r["policy"]]["rev/nfe_mean"] == r["per_family"]["rev"]["nfe_mean"]
    assert next(run.rglob("media/images/pareto_*.png")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = next(run.glob("*.wandb")).read_bytes()  # config and summary live in the run's log
    assert b"num_samples" in log and b"best_accuracy" in log and b"fastest_within_1pt_nfe" in log


def test_evaluation_summary_names_the_best_and_the_fastest_near_it():
    results = [{"policy": "vanilla", "accuracy": 100.0, "nfe_mean": 256.0},
               {"policy": "a", "accuracy": 99.5, "nfe_mean": 5.0},
               {"policy": "b", "accuracy": 90.0, "nfe_mean": 4.0}]
    s = tracking.evaluation_summary(results)
    assert s["best_plan"] == "vanilla" and s["fastest_within_1pt_plan"] == "a" and s["fastest_within_1pt_nfe"] == 5.0
    assert s["vanilla_nfe"] == 256.0 and s["num_plans"] == 3


def _traces(path, masked, label, nfe, committed=None):
    """A traces folder with the given step rows (block of 2) and per-prompt NFE."""
    n = len(masked)
    steps = {"prompt_id": [i % len(nfe) for i in range(n)], "block": [0] * n, "step": list(range(n)),
             "block_start": [0] * n, "length": [2] * n, "confidence": [[0.5, 0.5]] * n, "margin": [[0.0, 0.0]] * n,
             "entropy": [[0.0, 0.0]] * n, "token": [[3, 3]] * n, "masked": masked,
             "committed": committed or [[False] * 2] * n,
             "label": label}
    seqs = {"prompt_id": list(range(len(nfe))), "prompt": ["p"] * len(nfe), "family": ["arith"] * len(nfe),
            "prompt_ids": [[1]] * len(nfe), "reference": [[3, 3]] * len(nfe), "end_position": [-1] * len(nfe),
            "nfe": nfe, "correct": [True] * len(nfe)}
    datasets.DatasetDict({"steps": datasets.Dataset.from_dict(steps, features=STEP_FEATURES),
                          "sequences": datasets.Dataset.from_dict(seqs, features=SEQUENCE_FEATURES)}
                         ).save_to_disk(str(path))
    return path


def test_trace_counts_share_of_not_yet_final_among_masked_positions(tmp_path):
    path = _traces(tmp_path / "t", masked=[[True, True], [True, False], [False, False]],
                   label=[[True, False], [True, True], [False, False]], nfe=[10, 20])
    c = trace_counts(path)
    # 3 masked positions, 1 of them not final (an unmasked non-final one does not count)
    assert c["prompts"] == 2 and c["step_rows"] == 3 and c["masked_positions"] == 3
    assert c["not_final_share"] == pytest.approx(1 / 3)
    assert c["reference_forwards_per_prompt"] == 15.0 and c["recorded_forwards_per_prompt"] == 1.5
    assert c["wrong_commits"] == 0 and c["reference_correct_share"] == 1.0


def test_trace_counts_wrong_commits_are_commits_of_a_not_final_prediction(tmp_path):
    path = _traces(tmp_path / "t", masked=[[True, True], [True, False]], label=[[False, True], [False, True]],
                   nfe=[4], committed=[[True, True], [True, False]])
    assert trace_counts(path)["wrong_commits"] == 2  # row 0 position 0 and row 1 position 0


def test_collect_traces_logs_its_counts(random_ckpt, tmp_path, monkeypatch):
    from learn2pd.traces import CollectConfig, collect_traces

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "tr"
    merged = collect_traces(CollectConfig(out=str(out), model=str(random_ckpt), num_prompts=4, gen_length=16,
                                          reference_plan="vanilla", dtype="float32",
                                          block_length=16, batch_size=4, mode="reference"), progress=False)
    log = next(_run_dir(out / "logs").glob("*.wandb")).read_bytes()
    assert b"not_final_share" in log and b"step_rows" in log and b"reference_forwards_per_prompt" in log
    from learn2pd.traces.store import read_metadata

    meta = read_metadata(merged)  # prompts too long for this checkpoint's context are skipped, not recorded
    assert trace_counts(merged)["prompts"] == meta["num_prompts"] - meta["skipped"] > 0
