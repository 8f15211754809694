"""The same plans at several block lengths: where a heuristic sits against the oracle as blocks grow.

Published learned policies win where blocks are long (full diffusion), and thresholds are near the
oracle at block 32; `block_sweep` measures both on the same problems, one `evaluate` per block length.
"""

from __future__ import annotations

import dataclasses

from learn2pd.decoding.config import DecodeConfig
from learn2pd.decoding.plan import DecodingPlan, make_plan
from learn2pd.evaluation.runner import evaluate

BASELINES = ("vanilla", "oracle")  # not heuristics: the reference and the floor


def servable(plans: list[DecodingPlan], configs: list[DecodeConfig], spec) -> list[tuple[str, int, str]]:
    """(plan, block length, reason) for every pair whose plan refuses that decoding config."""
    bad = []
    for cfg in configs:
        for plan in plans:
            try:
                plan.policy.check(cfg, spec)
            except ValueError as err:
                bad.append((plan.label, cfg.block_length, str(err)))
    return bad


def block_sweep(model, tokenizer, spec, problems, policies, config: DecodeConfig, block_lengths: list[int],
                batch_size: int = 64, progress: bool = True, skip_unservable: bool = False, on_block=None) -> dict:
    """`evaluate` at each block length; every (plan, block) pair is checked before anything is decoded.

    A pair a plan cannot serve (a filter trained for another block) fails the sweep up front, or with
    `skip_unservable` is left out of that block's table and listed under `skipped`.
    """
    plans = [make_plan(p) for p in policies]
    configs = [dataclasses.replace(config, block_length=b) for b in block_lengths]
    for cfg in configs:
        cfg.validate()
    bad = servable(plans, configs, spec)
    if bad and not skip_unservable:
        raise ValueError("plans that cannot run at a swept block length (nothing was decoded):\n"
                         + "\n".join(f"  {p} at block {b}: {why}" for p, b, why in bad))
    sweep = {"block_lengths": list(block_lengths), "skipped": [list(x) for x in bad], "blocks": {}}
    for cfg in configs:
        out = {(p, b) for p, b, _ in bad}
        keep = [p for p in plans if (p.label, cfg.block_length) not in out]
        report = evaluate(model, tokenizer, spec, problems, keep, cfg, batch_size, progress)
        report["gap"] = oracle_gap(report["results"])
        sweep["blocks"][cfg.block_length] = report
        if on_block is not None:
            on_block(sweep)
    return sweep


def _kind(label: str) -> str:
    return label.split("+")[0].split(":")[0]


def oracle_gap(results: list[dict], tolerance: float = 1.0) -> dict | None:
    """The cheapest training-free plan within `tolerance` points of vanilla's accuracy, and its forwards
    against the oracle's (the room a learned policy can take). None without vanilla or oracle."""
    by_kind: dict[str, dict] = {}
    for r in results:  # the first of each: evaluate puts plain vanilla first
        if _kind(r["policy"]) in BASELINES:
            by_kind.setdefault(_kind(r["policy"]), r)
    if set(BASELINES) - set(by_kind):
        return None
    ok = [r for r in results if _kind(r["policy"]) not in (*BASELINES, "learned")
          and r["accuracy"] >= by_kind["vanilla"]["accuracy"] - tolerance]
    if not ok:
        return None
    best = min(ok, key=lambda r: r["nfe_mean"])
    return {"heuristic": best["policy"], "heuristic_nfe": best["nfe_mean"], "heuristic_accuracy": best["accuracy"],
            "oracle_nfe": by_kind["oracle"]["nfe_mean"],
            "ratio": best["nfe_mean"] / by_kind["oracle"]["nfe_mean"], "tolerance": tolerance}


def _knob(policy: str) -> str:
    """The swept value of a plan (`tau=0.85` -> `0.85`, `threshold=0.9` -> `0.9`), '' if none: its point label."""
    from learn2pd.decoding.plan import parse_policy

    for part in policy.split("+"):
        params = parse_policy(part)[1]
        for key in ("tau", "threshold"):
            if key in params:
                return f"{params[key]:g}"
    return ""


def plot_sweep(sweep: dict, path) -> None:
    """Accuracy against forwards, one panel per block length. The plans of one family (`plan_family`:
    `threshold:tau=*+eotp`, or one filter at several thresholds) form one curve, each point labelled with its
    threshold, so a dozen plans read as a few curves; the panels share the accuracy axis."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from learn2pd.atomic import write_atomic
    from learn2pd.evaluation.runner import plan_family

    blocks = sweep["blocks"]
    fig, axes = plt.subplots(1, len(blocks), figsize=(4.6 * len(blocks) + 2.8, 4.4), sharey=True, squeeze=False)
    families = sorted({plan_family(r["policy"]) for rep in blocks.values() for r in rep["results"]})
    colours, markers = plt.get_cmap("tab10").colors, "os^Dv<>pP*Xh"
    style = {f: (colours[i % 10], markers[i % len(markers)]) for i, f in enumerate(families)}
    for ax, (b, rep) in zip(axes[0], blocks.items()):
        curves: dict[str, list] = {}
        for r in rep["results"]:
            curves.setdefault(plan_family(r["policy"]), []).append((r["nfe_mean"], r["accuracy"], _knob(r["policy"])))
        for fam, pts in sorted(curves.items()):
            pts.sort()
            c, m = style[fam]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=c, marker=m, ms=6, lw=1.2, label=fam)
            for x, y, knob in pts:
                if knob:
                    ax.annotate(knob, (x, y), textcoords="offset points", xytext=(4, -9), fontsize=6, color=c)
        ax.set_xscale("log", base=2)
        lo, hi = ax.get_xlim()  # plain-number ticks: powers of 2 alone leave a panel with one tick
        ax.set_xticks([t for t in (1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 128, 256) if lo <= t <= hi])
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(f"block {b}")
        ax.set_xlabel("forwards per problem (NFE, log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 1 - 2.7 / fig.get_figwidth(), 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
