"""Run several decoding policies on the same problems and measure each side by side."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from learn2pd.decoding.batching import StepProgress, decode_all, encode_prompts
from learn2pd.decoding.config import DecodeConfig, DecodeOutput
from learn2pd.decoding.plan import DecodingPlan, make_plan
from learn2pd.evaluation.metrics import aup, percentile


def run_policy(model, tokenizer, spec, problems, policy_spec, config: DecodeConfig, batch_size: int = 64,
               progress: bool = True, references: list[torch.Tensor] | None = None) -> dict:
    """Decode every problem with one plan (a spec string or a DecodingPlan); returns metrics and records.

    references: per problem, the generated ids of a vanilla decode (needed by the oracle).
    """
    plan = make_plan(policy_spec)
    out = decode_problems(model, tokenizer, spec, [p.prompt for p in problems], plan, config, batch_size, progress,
                          references)
    return summarize(plan, problems, out, spec, config)


def decode_problems(model, tokenizer, spec, prompts: list[str], plan: DecodingPlan, config: DecodeConfig,
                    batch_size: int = 64, progress: bool = True,
                    references: list[torch.Tensor] | None = None) -> DecodeOutput:
    """One plan's decode of the prompts, batched by length, with a progress bar."""
    encoded = encode_prompts(tokenizer, prompts)
    bar = tqdm(total=len(prompts), desc=f"{plan.label:>24}", disable=not progress, unit="prob", leave=False)
    out = decode_all(model, tokenizer, spec, encoded, plan, config, batch_size, references, on_batch=bar.update,
                     on_step=StepProgress(bar) if progress else None)
    bar.close()
    return out


def summarize(plan: DecodingPlan, problems, out: DecodeOutput, spec, config: DecodeConfig) -> dict:
    """A plan's metrics and per-problem records (graded by each problem's grader) from its decode."""
    records, lengths = [], answer_tokens(out.sequences, spec.end_ids).tolist()
    for i, p in enumerate(problems):
        records.append({"id": i, "family": p.family, "output": out.texts[i], "correct": p.grade(out.texts[i]),
                        "nfe": int(out.nfe[i]), "positions": int(out.positions[i]),
                        "answer_tokens": lengths[i],
                        "latency_s": float(out.latency_s[i]), "tokens": out.sequences[i]})
    n = len(problems)
    nfe_mean = float(out.nfe.float().mean())
    lat = [r["latency_s"] for r in records]
    return {
        "policy": plan.label,
        "plan": plan.describe(),  # after decoding: checks may resolve parts against the model
        "accuracy": 100.0 * sum(r["correct"] for r in records) / n,
        "nfe_mean": nfe_mean,
        "positions_mean": float(out.positions.float().mean()),
        "tpf": config.gen_length / nfe_mean,
        "tokens_per_s": config.gen_length * n / out.wall_time_s,
        "latency_s_mean": sum(lat) / n,
        "latency_s_p95": percentile(lat, 95),
        "wall_time_s": out.wall_time_s,
        "model_calls": out.model_calls,
        "per_family": _per_family(records),
        "records": records,
    }


def answer_tokens(sequences: torch.Tensor, end_ids) -> torch.Tensor:
    """[B] generated tokens before each row's first end token (the whole row when it has none)."""
    is_end = torch.isin(sequences, torch.tensor(list(end_ids), device=sequences.device))
    first = torch.where(is_end.any(1), is_end.int().argmax(1), sequences.shape[1])
    return first.cpu()


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


def evaluate(model, tokenizer, spec, problems, policies: list[str | DecodingPlan], config: DecodeConfig,
             batch_size: int = 64, progress: bool = True, baseline: str = "vanilla") -> dict:
    """Every plan on the same problems; speedups are against `baseline` measured in this same run.

    Each plan is built once (a learned filter is loaded once). The oracle reuses the baseline's decode of
    this run as its reference (the baseline runs first, and is added when the oracle needs it). The
    baseline is `vanilla`, or `vanilla+eotp` (one token per step until its predicted end: cheaper where
    answers are short, as the trace collector's reference). Per-problem records (output, correct, nfe,
    positions) stay in each result, without the token ids.
    """
    if not problems:
        raise ValueError("no problems to evaluate: the task source is empty")
    torch.manual_seed(config.seed)
    plans = plan_order(policies, baseline)
    outs = decode_plans(model, tokenizer, spec, [p.prompt for p in problems], plans, config, batch_size, progress)
    return compare(plans, problems, outs, spec, config, baseline)


def plan_order(policies: list[str | DecodingPlan], baseline: str = "vanilla") -> list[DecodingPlan]:
    """The plans built, the baseline (vanilla) first: the baseline of the speedups and the oracle's reference,
    added when an oracle needs it."""
    plans = [make_plan(p) for p in policies]
    needs_ref = any(p.policy.needs_reference for p in plans)
    vanilla = next((p for p in plans if p.describe() == make_plan(baseline).describe()), None)
    if needs_ref and vanilla is None:
        vanilla = make_plan(baseline)
        plans.insert(0, vanilla)
    if vanilla is not None:
        plans.remove(vanilla)
        plans.insert(0, vanilla)
    return plans


def decode_plans(model, tokenizer, spec, prompts: list[str], plans: list[DecodingPlan], config: DecodeConfig,
                 batch_size: int = 64, progress: bool = True, decode=decode_problems) -> list[DecodeOutput]:
    """Each plan's decode of the prompts (in `plan_order`: a plan needing a reference follows vanilla's).
    `decode` has `decode_problems`' signature (a data-parallel run passes its sharded one)."""
    for plan in plans:  # a plan these settings refuse (a filter of another block length) fails before any decode
        plan.policy.check(config, spec)
    outs: list[DecodeOutput] = []
    for plan in plans:
        references = list(outs[0].sequences) if plan.policy.needs_reference else None
        outs.append(decode(model, tokenizer, spec, prompts, plan, config, batch_size, progress, references))
    return outs


def compare(plans: list[DecodingPlan], problems, outs: list[DecodeOutput], spec, config: DecodeConfig,
            baseline: str = "vanilla") -> dict:
    """The report of `evaluate` from each plan's decode: metrics, speedups against vanilla, AUP per family."""
    results = [summarize(plan, problems, out, spec, config) for plan, out in zip(plans, outs)]
    base = results[0] if plans[0].describe() == make_plan(baseline).describe() else None
    y_max = max(r["accuracy"] for r in results)
    families: dict[str, list] = {}
    for r in results:
        r["speedup_nfe"] = base["nfe_mean"] / r["nfe_mean"] if base else None
        r["speedup_time"] = base["wall_time_s"] / r["wall_time_s"] if base else None
        r["family"] = plan_family(r["policy"])
        families.setdefault(r["family"], []).append((r["tpf"], r["accuracy"]))
        for rec in r["records"]:
            rec.pop("tokens")
    aups = {f: aup(pts, y_max) for f, pts in families.items()}
    for r in results:
        r["aup"] = aups[r["family"]]
    return {"results": results, "aup": aups}
