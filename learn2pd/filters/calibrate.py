"""Thresholds chosen by decoding: the cheapest acceptance threshold that keeps accuracy.

A filter's test AUROC says little about what it does to answers: one early false accept on a serial
line spoils everything after it. `calibrate` decodes validation problems with the learned plan at a
sweep of thresholds, per block length, and keeps the one with the fewest forwards whose accuracy is
within `budget` points of the reference decode's on the same problems. The choice is stored in the
filter's config.json (`thresholds`), which `learned` uses unless given a threshold.

The reference is a plan (vanilla: one token per forward, the accuracy parallel decoding must keep) or
`best`: the most accurate of the swept thresholds, with no decode of its own. Vanilla costs gen_length
forwards per problem (an hour for 100 problems at gen 256 on two CPU cores); `best` trusts the most
conservative threshold to be as accurate as vanilla, which the stored rows let a reader check.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from learn2pd.decoding.config import DecodeConfig
from learn2pd.evaluation.runner import run_policy
from learn2pd.filters.models import load_filter

BEST = "best"  # the reference accuracy is the best of the swept thresholds' (no reference decode)
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)


def threshold_for(thresholds: dict, block_length: int, default: float) -> float:
    """The calibrated threshold of this block length, else of the nearest calibrated one (log scale:
    64 is as far from 32 as 128), else `default`."""
    if not thresholds:
        return default
    blocks = {int(k): float(v) for k, v in thresholds.items()}
    if block_length in blocks:
        return blocks[block_length]
    return blocks[min(blocks, key=lambda b: (abs(math.log2(b / block_length)), b))]


def learned_spec(path, threshold: float, eot=None) -> str:
    return f"learned:path={path},threshold={threshold}" + (f",eot={eot}+eotp" if eot else "")


def pick(rows: list[dict], reference_accuracy: float, budget: float) -> dict:
    """The fewest forwards within budget (ties: the higher, safer threshold); with none within budget,
    the most accurate row."""
    ok = [r for r in rows if r["accuracy"] >= reference_accuracy - budget]
    if not ok:
        return max(rows, key=lambda r: (r["accuracy"], r["threshold"]))
    return min(ok, key=lambda r: (r["nfe_mean"], -r["threshold"]))


def calibrate(model, tokenizer, spec, filter_path, problems, config: DecodeConfig, block_lengths: list[int],
              eot_path=None, thresholds=THRESHOLDS, budget: float = 0.5, reference: str = "vanilla",
              batch_size: int = 64, progress: bool = True) -> dict:
    """Decode `problems` with the reference and with the learned plan at each threshold, per block length.

    Returns {"thresholds": {block: chosen}, "runs": {block: {"reference": ..., "rows": [...]}}}: accuracy
    and mean forwards of every run, so the choice can be checked.
    """
    if budget < 0:
        raise ValueError(f"budget must be >= 0 accuracy points, got {budget}")
    if not thresholds or not all(0 < t < 1 for t in thresholds):
        raise ValueError(f"thresholds must lie strictly between 0 and 1, got {list(thresholds)}")
    chosen, runs = {}, {}
    for b in block_lengths:
        cfg = dataclasses.replace(config, block_length=b)
        cfg.validate()
        ref = None if reference == BEST else run_policy(model, tokenizer, spec, problems, reference, cfg,
                                                        batch_size, progress)
        rows = []
        for t in sorted(thresholds):
            r = run_policy(model, tokenizer, spec, problems, learned_spec(filter_path, t, eot_path), cfg,
                           batch_size, progress)
            rows.append({"threshold": t, "accuracy": r["accuracy"], "nfe_mean": r["nfe_mean"]})
        if ref is None:
            top = max(rows, key=lambda r: (r["accuracy"], r["threshold"]))
            ref = {"accuracy": top["accuracy"], "nfe_mean": top["nfe_mean"]}
        best = pick(rows, ref["accuracy"], budget)
        chosen[str(b)] = best["threshold"]
        runs[str(b)] = {"reference": {"plan": reference, "accuracy": ref["accuracy"], "nfe_mean": ref["nfe_mean"]},
                        "rows": rows, "within_budget": best["accuracy"] >= ref["accuracy"] - budget}
    return {"thresholds": chosen, "runs": runs, "budget": budget, "num_problems": len(problems)}


def write_calibration(filter_path, result: dict, tasks: str, overwrite: bool = False) -> Path:
    """Store the chosen thresholds (and how they were chosen) in the filter's config.json, and write its
    model card again (it states the thresholds)."""
    from learn2pd.filters.hub import write_model_card
    from learn2pd.traces.store import read_metadata

    module = load_filter(filter_path)
    module.config.thresholds = {**module.config.thresholds, **result["thresholds"]}
    module.config.training = {**module.config.training,
                              "calibration": {"tasks": tasks, **{k: result[k] for k in ("budget", "num_problems",
                                                                                        "runs")}}}
    module.save_pretrained(filter_path, overwrite=overwrite)
    traces = module.config.training.get("traces")
    first = traces[0] if isinstance(traces, list) and traces else traces
    meta = read_metadata(first) if first and Path(first).is_dir() else None
    write_model_card(filter_path, meta)
    return Path(filter_path)
