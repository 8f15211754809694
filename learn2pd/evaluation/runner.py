"""Run several decoding policies on the same problems and measure each side by side."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from learn2pd.decoding.engine import DecodeConfig, decode, decode_text
from learn2pd.decoding.policies import make_plan
from learn2pd.evaluation.metrics import aup, percentile
from learn2pd.tasks.prompting import format_prompt, left_pad
from learn2pd.tasks.suite import is_correct


def run_policy(model, tokenizer, spec, problems, policy_spec, config: DecodeConfig, batch_size: int = 64,
               progress: bool = True, references: list[torch.Tensor] | None = None) -> dict:
    """Decode every problem with one plan (a spec string or a DecodingPlan); returns metrics and records.

    references: per problem, the generated ids of a vanilla decode (needed by the oracle).
    """
    plan = make_plan(policy_spec)
    policy_spec = plan.describe()
    device = next(model.parameters()).device
    encoded = [format_prompt(tokenizer, p.prompt) for p in problems]
    # Sort by prompt length so batches carry little padding; results are put back in order.
    order = sorted(range(len(problems)), key=lambda i: len(encoded[i]))
    records: list[dict | None] = [None] * len(problems)
    total_time, calls = 0.0, 0
    bar = tqdm(total=len(problems), desc=f"{policy_spec:>24}", disable=not progress, unit="prob", leave=False)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids, mask = left_pad([encoded[i] for i in idx], spec.pad_id)
        t0 = time.perf_counter()
        ref = torch.stack([references[i] for i in idx]).to(device) if references is not None else None
        out = decode(model, spec, ids.to(device), mask.to(device), plan, config, reference=ref)
        elapsed = time.perf_counter() - t0
        total_time += elapsed
        calls += out.model_calls
        for row, i in enumerate(idx):
            text = decode_text(tokenizer, spec, out.sequences[row].cpu())
            records[i] = {"id": i, "family": problems[i].family, "output": text,
                          "correct": is_correct(problems[i], text), "nfe": int(out.nfe[row]),
                          "positions": int(out.positions[row]), "latency_s": elapsed,
                          "tokens": out.sequences[row].cpu()}
        bar.update(len(idx))
    bar.close()
    n = len(problems)
    nfe = [r["nfe"] for r in records]
    lat = [r["latency_s"] for r in records]
    nfe_mean = sum(nfe) / n
    return {
        "policy": policy_spec,
        "accuracy": 100.0 * sum(r["correct"] for r in records) / n,
        "nfe_mean": nfe_mean,
        "positions_mean": sum(r["positions"] for r in records) / n,
        "tpf": config.gen_length / nfe_mean,
        "tokens_per_s": config.gen_length * n / total_time,
        "latency_s_mean": sum(lat) / n,
        "latency_s_p95": percentile(lat, 95),
        "wall_time_s": total_time,
        "model_calls": calls,
        "per_family": _per_family(records),
        "records": records,
    }


def _per_family(records) -> dict:
    fams: dict[str, list] = {}
    for r in records:
        fams.setdefault(r["family"], []).append(r)
    return {f: {"accuracy": 100.0 * sum(r["correct"] for r in rs) / len(rs),
                "nfe_mean": sum(r["nfe"] for r in rs) / len(rs), "n": len(rs)} for f, rs in fams.items()}


def plan_family(policy_spec: str) -> str:
    """`threshold:tau=0.7+eotp` -> `threshold+eotp`: the points of one family form its sweep. A learned
    policy with its own filter (`learned:path=DIR`) is its own family, `learned(DIR name)`."""
    names = []
    for part in policy_spec.split("+"):
        name, _, params = part.partition(":")
        path = dict(kv.split("=", 1) for kv in params.split(",") if "=" in kv).get("path")
        names.append(f"{name.strip()}({Path(path).name})" if path else name.strip())
    return "+".join(names)


def evaluate(model, tokenizer, spec, problems, policies: list[str], config: DecodeConfig, batch_size: int = 64,
             progress: bool = True, keep_records: bool = False) -> dict:
    """Every plan on the same problems; speedups are against `vanilla` measured in this same run.

    The oracle reuses the vanilla decode of this run as its reference (vanilla runs first).
    """
    torch.manual_seed(config.seed)
    needs_ref = any(getattr(make_plan(p).policy, "needs_reference", False) for p in policies)
    ordered = sorted(policies, key=lambda p: p != "vanilla") if needs_ref else list(policies)
    if needs_ref and "vanilla" not in ordered:
        ordered.insert(0, "vanilla")
    by_spec, references = {}, None
    for p in ordered:
        needs = getattr(make_plan(p).policy, "needs_reference", False)
        by_spec[p] = run_policy(model, tokenizer, spec, problems, p, config, batch_size, progress,
                                references if needs else None)
        if p == "vanilla":
            references = [r["tokens"] for r in by_spec[p]["records"]]
    results = [by_spec[p] for p in ordered]
    base = by_spec.get("vanilla")
    y_max = max(r["accuracy"] for r in results)
    families: dict[str, list] = {}
    for r in results:
        r["speedup_nfe"] = base["nfe_mean"] / r["nfe_mean"] if base else None
        r["speedup_time"] = base["wall_time_s"] / r["wall_time_s"] if base else None
        r["family"] = plan_family(r["policy"])
        families.setdefault(r["family"], []).append((r["tpf"], r["accuracy"]))
        for rec in r["records"]:
            rec.pop("tokens")
        if not keep_records:
            r.pop("records")
    aups = {f: aup(pts, y_max) for f, pts in families.items()}
    for r in results:
        r["aup"] = aups[r["family"]]
    return {"results": results, "aup": aups}
