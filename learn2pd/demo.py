"""The end-to-end job on the embedded tiny dLLM: traces -> filter + EoT predictor -> every policy.

    learn2pd demo [--out outputs/demo] [--num-traces 384] [--num-samples 60] [--cache dual]

Traces are on-policy (the states `threshold:tau=0.7+eotp` visits, its own mistakes included) and labelled
against the training problems' expected answers, so no reference is decoded (384 prompts in about a minute on
two cores; oracle-replay traces with a vanilla+eotp reference had done half of them after 3.4 minutes). They are
collected without a cache; the evaluation runs with `cache`, Fast-dLLM's dual cache by default (as Learn2PD's
headline figures): a one-token-per-step forward then computes the current block, not the whole sequence.
Every family at gen 256 (the long families' region); the evaluation set is small (60
problems), and the baseline the speedups and the oracle need is `vanilla+eotp` (one token per step until
its predicted end of text), not plain vanilla (one token per step over all 256 positions), to keep the demo
short. Last, the `list` family on checkpoints/tiny-llada-choice shows where a learned filter wins.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from learn2pd.atomic import check_output
from learn2pd.decoding.engine import DecodeConfig
from learn2pd.evaluation.report import markdown_table, plot_pareto, write_atomic, write_json
from learn2pd.evaluation.runner import evaluate
from learn2pd.filters.models import FILTER_FILES
from learn2pd.models.loading import load_model, resolve_dtype
from learn2pd.tasks.loaders import load_problems
from learn2pd.tasks.suite import SUITE, default_gen_length
from learn2pd.traces import CollectConfig, collect_traces
from learn2pd.traces.store import COLLECTION_FILES

# what a demo's --out holds: anything else there is the user's, never replaced without --overwrite
DEMO_FILES = ("traces", "filter", "eot", "logs", "results.json", "results.md", "results.png")

# The baseline (speedups, the oracle's reference) is vanilla+eotp: one token per step until its predicted end,
# 2.1x fewer forwards than plain vanilla at gen 256 (README: 99.5% against 100.0% on 200 long problems).
BASELINE = "vanilla+eotp"
TRACE_PLAN = "threshold:tau=0.7+eotp"  # makes mistakes on chain: the states a filter must learn to refuse
TRAINING_FREE = [BASELINE, "threshold:tau=0.9+eotp", "threshold:tau=0.7+eotp",
                 "threshold:tau=0.5+eotp", "localleap+eotp", "localleap:kappa=0.8,tau=0.6+eotp", "adablock+eotp",
                 "threshold:tau=0.7+adablock+eotp"]


def learned_plans(filter_dir: Path, eot_dir: Path) -> list[str]:
    f, e = f"path={filter_dir}", f"eot={eot_dir}"
    return [f"learned:{f},{e}+eotp", f"learned:{f},threshold=0.9,{e}+eotp", f"learned:{f},{e}+localleap+eotp",
            f"learned:{f},{e}+threshold:tau=0.7+eotp", "oracle+eotp"]


# Where a learned filter wins: the `list` family (several right answers) on the model trained with it, the
# shipped filter of that model at 0.5 against the thresholds (docs/block-length.md).
CHOICE_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny-llada-choice"


def list_plans() -> list[str]:
    f = f"path={CHOICE_MODEL}-filter,eot={CHOICE_MODEL}-eot"
    return ["threshold:tau=0.9+eotp", "threshold:tau=0.7+eotp", f"learned:{f}+eotp", f"learned:{f},threshold=0.5+eotp"]


def _list_family(num_samples: int, batch_size: int, dtype: str, progress: bool, say) -> tuple[list[dict], str]:
    """The list-family results (plan, accuracy, NFE) and their Markdown table."""
    say(f"[+] where the learned filter wins: {num_samples} held-out `list` problems (a free `,` or `;` between "
        f"letters) on {CHOICE_MODEL.name}, with its shipped filter")
    model, tok, spec = load_model(str(CHOICE_MODEL), dtype=dtype)
    report = evaluate(model, tok, spec, load_problems("choice", num_samples), list_plans(),
                      DecodeConfig(gen_length=64, block_length=32), batch_size, progress,
                      baseline="vanilla+eotp")
    rows = [{k: r[k] for k in ("policy", "accuracy", "nfe_mean")} for r in report["results"]]
    table = "| plan (list family) | acc % | NFE |\n|---|---:|---:|\n" + "\n".join(
        f"| {r['policy'].replace(str(CHOICE_MODEL.parent) + '/', '')} | {r['accuracy']:.1f} | {r['nfe_mean']:.2f} |"
        for r in rows)
    return rows, table


def run_demo(out: str = "outputs/demo", num_traces: int = 384, num_samples: int = 60, gen_length: int | None = None,
             block_length: int = 32, batch_size: int = 64, dtype: str = "auto", progress: bool = True,
             overwrite: bool = False, cache: str = "dual") -> dict:
    from learn2pd.trainers.train_filter import TrainFilterConfig, train_filter

    # Every argument and output is checked before anything is written or removed.
    for flag, value in (("--num-traces", num_traces), ("--num-samples", num_samples), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{flag} must be a whole number > 0, got {value!r}")
    resolve_dtype(dtype)
    gen_length = gen_length or default_gen_length(SUITE)  # 256: the long families need it
    decoding = DecodeConfig(gen_length=gen_length, block_length=block_length, cache=cache)
    decoding.validate()
    out_dir = check_output(out, "--out", folder=True, overwrite=overwrite, owns=DEMO_FILES, what="a demo's output")
    collect_cfg = CollectConfig(out=str(out_dir / "traces"), num_prompts=num_traces, gen_length=gen_length,
                                block_length=block_length, batch_size=batch_size, dtype=dtype,
                                mode="on-policy", plan=TRACE_PLAN, reference_plan="answer", overwrite=overwrite)
    collect_cfg.validate()
    check_output(out_dir / "traces", "--out", folder=True, overwrite=overwrite, owns=COLLECTION_FILES,
                 what="a trace collection")
    for sub in ("filter", "eot"):
        check_output(out_dir / sub, "--out", folder=True, overwrite=overwrite, owns=FILTER_FILES,
                     what="a learn2pd filter")
    t0 = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)
    # From nothing: traces left by an earlier demo (another model or settings) must not be resumed.
    shutil.rmtree(out_dir / "traces", ignore_errors=True)
    say(f"[1/3] collecting on-policy traces of {num_traces} training problems ({TRACE_PLAN}, labelled against "
        "the expected answers)")
    traces = collect_traces(collect_cfg, progress)
    say(f"[2/3] training the Learn2PD filter and the End-of-Text predictor (W&B offline, CSV) on {traces}")
    common = dict(traces=str(out_dir / "traces"), log_dir=str(out_dir / "logs"), overwrite=overwrite)
    filt = train_filter(TrainFilterConfig(out=str(out_dir / "filter"), target="filter",
                                          filter={"kind": "learn2pd", "block_length": block_length}, **common),
                        progress)
    eot = train_filter(TrainFilterConfig(out=str(out_dir / "eot"), target="eot", calibrate_false_accept=0.001,
                                         filter={"kind": "eot", "block_length": block_length}, **common), progress)
    say(f"      filter test AUROC {filt['test/auroc']:.3f}, EoT test AUROC {eot['test/auroc']:.3f}")
    plans = TRAINING_FREE + learned_plans(out_dir / "filter", out_dir / "eot")
    say(f"[3/3] evaluating {len(plans)} plans on {num_samples} held-out problems (cache: {cache}; baseline {BASELINE})")
    model, tok, spec = load_model(dtype=dtype)
    report = evaluate(model, tok, spec, load_problems("suite", num_samples), plans, decoding, batch_size, progress,
                      baseline=BASELINE)
    report["config"] = {"num_traces": num_traces, "num_samples": num_samples, "gen_length": gen_length, "cache": cache,
                        "block_length": block_length, "dtype": dtype, "filter": filt, "eot": eot}
    table = markdown_table(report["results"])
    print(table)
    report["list_family"], list_table = _list_family(num_samples, batch_size, dtype, progress, say)
    print("\n" + list_table)
    results = write_json(out_dir / "results.json", report)
    write_atomic(out_dir / "results.md", table + "\n\n" + list_table + "\n")
    plot = plot_pareto(report["results"], out_dir / "results.png")
    from learn2pd import tracking

    tracking.log_evaluation(report, out_dir / "logs", name="demo-evaluate")  # beside the trainers' runs
    say(f"done in {time.perf_counter() - t0:.0f}s. Files:\n  traces  {traces}\n  filter  {out_dir / 'filter'}\n"
        f"  eot     {out_dir / 'eot'}\n  logs    {out_dir / 'logs'} (CSV, and the W&B offline run under logs/wandb)\n"
        f"  results {results}, {out_dir / 'results.md'}, {plot}")
    return report
