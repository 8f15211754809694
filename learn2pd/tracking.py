"""Weights & Biases for every experiment, through this one module.

Offline unless the user is logged in (`WANDB_API_KEY`), and `WANDB_MODE` always wins (`disabled` turns it
off); an offline run is a folder `DIR/wandb/offline-run-*` that `wandb sync` uploads later. W&B's own
console chatter (banner, 35-line summary) stays off unless `verbose`.

    evaluate       -> log_evaluation: a table (one row per plan, per-family columns), the Pareto plot,
                      the config and summary metrics
    collect-traces -> log_trace_counts: prompts, step rows, share of not-yet-final positions, forwards
    trainers       -> lightning_logger: a Lightning WandbLogger (losses and metrics as they are logged)
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

DEFAULT_PROJECT = "learn2pd"


def wandb_mode() -> str:
    """`WANDB_MODE` if set, else online when logged in by key, else offline; exported for W&B's children."""
    mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
    os.environ["WANDB_MODE"] = mode
    return mode


def _wandb(verbose: bool = False):
    try:
        import wandb
    except ImportError:
        raise ValueError("W&B logging needs `pip install wandb` (or turn it off: --wandb false)") from None
    if not verbose:
        os.environ.setdefault("WANDB_SILENT", "true")
    return wandb


def _settings(wandb, verbose: bool):
    # console="off": W&B does not wrap stdout/stderr (progress bars stay ours); silent: no banner.
    return wandb.Settings(silent=not verbose, console="wrap" if verbose else "off")


def lightning_logger(save_dir, name: str, project: str = DEFAULT_PROJECT, config: dict | None = None,
                     verbose: bool = False):
    """A Lightning WandbLogger writing under `save_dir` (the trainers' logger)."""
    from lightning.pytorch.loggers import WandbLogger

    wandb = _wandb(verbose)
    mode = wandb_mode()
    Path(save_dir).mkdir(parents=True, exist_ok=True)  # W&B looks for the git root from it: else a warning
    logger = WandbLogger(project=project, save_dir=str(save_dir), name=name, offline=mode == "offline",
                         mode=mode, settings=_settings(wandb, verbose), config=config)
    logger._wandb_init.pop("anonymous", None)  # Lightning passes anonymous=None, which W&B warns is deprecated
    return logger


def finish() -> None:
    """Close the current run and wait until its files are written (Lightning leaves its run open, and
    W&B's writer process otherwise closes the run's log just after `finish()` returns)."""
    import sys

    if "wandb" in sys.modules:
        sys.modules["wandb"].finish()
        sys.modules["wandb"].teardown()


@contextmanager
def run(save_dir, name: str, job_type: str, config: dict | None = None, project: str | None = None,
        verbose: bool = False):
    """A W&B run for one experiment; yields it (a disabled run when WANDB_MODE=disabled) and finishes it."""
    wandb = _wandb(verbose)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    project = project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
    r = wandb.init(project=project, name=name, job_type=job_type, dir=str(save_dir), config=config or {},
                   mode=wandb_mode(), settings=_settings(wandb, verbose), reinit="finish_previous")
    try:
        yield r
    finally:
        r.finish()
        finish()


def evaluation_table(results: list[dict]) -> tuple[list[str], list[list]]:
    """Columns and rows of the results table: one row per plan, accuracy and NFE per family."""
    families = sorted({f for r in results for f in r.get("per_family", {})})
    cols = ["plan", "family", "accuracy", "nfe_mean", "tpf", "tokens_per_s", "speedup_nfe", "speedup_time", "aup"]
    per_family = [(f, k) for f in families for k in ("accuracy", "nfe_mean")]
    columns = cols + [f"{f}/{k}" for f, k in per_family]
    rows = []
    for r in results:
        fam = r.get("per_family", {})
        rows.append([r.get("policy") if c == "plan" else r.get(c) for c in cols]
                    + [fam.get(f, {}).get(k) for f, k in per_family])
    return columns, rows


def evaluation_summary(results: list[dict]) -> dict:
    """Headline numbers of an evaluation: the best plan by accuracy and the fastest within a point of it."""
    best = max(results, key=lambda r: (r["accuracy"], -r["nfe_mean"]))
    near = [r for r in results if r["accuracy"] >= best["accuracy"] - 1.0]
    fastest = min(near, key=lambda r: r["nfe_mean"])
    out = {"num_plans": len(results), "best_accuracy": best["accuracy"], "best_plan": best["policy"],
           "fastest_within_1pt_plan": fastest["policy"], "fastest_within_1pt_nfe": fastest["nfe_mean"],
           "fastest_within_1pt_accuracy": fastest["accuracy"]}
    vanilla = next((r for r in results if r["policy"] == "vanilla"), None)
    if vanilla is not None:
        out |= {"vanilla_accuracy": vanilla["accuracy"], "vanilla_nfe": vanilla["nfe_mean"]}
    return out


def log_evaluation(report: dict, save_dir="runs/evaluate", name: str | None = None,
                   project: str | None = None, verbose: bool = False) -> Path | None:
    """Log an `evaluate` report (results table, Pareto plot, config, summary); returns the run folder."""
    import tempfile

    from learn2pd.evaluation.report import plot_pareto

    wandb = _wandb(verbose)
    columns, rows = evaluation_table(report["results"])
    with run(save_dir, name or "evaluate", "evaluate", report.get("config"), project, verbose) as r, \
            tempfile.TemporaryDirectory() as tmp:
        plot = plot_pareto(report["results"], Path(tmp) / "pareto.png")
        r.log({"results": wandb.Table(columns=columns, data=rows), "pareto": wandb.Image(str(plot))})
        r.summary.update(evaluation_summary(report["results"]))
        return Path(r.dir).parent if getattr(r, "dir", None) else None


def log_trace_counts(traces_dir, config: dict, save_dir, project: str | None = None,
                     verbose: bool = False) -> dict:
    """Log `trace_counts` of a finished collection (summary and one logged row); returns the counts."""
    from learn2pd.traces.stats import trace_counts

    counts = trace_counts(traces_dir)
    with run(save_dir, f"traces-{Path(config.get('out', traces_dir)).name}", "collect-traces", config, project,
             verbose) as r:
        r.log(counts)
        r.summary.update(counts)
    return counts
