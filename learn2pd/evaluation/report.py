"""Reports of an evaluation: Markdown table, JSON file and accuracy-vs-TPF plot, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from learn2pd.atomic import write_atomic  # also imported from here by existing callers

COLUMNS = [("policy", "policy", "{}"), ("accuracy", "acc %", "{:.1f}"), ("nfe_mean", "NFE", "{:.1f}"),
           ("tpf", "TPF", "{:.2f}"), ("tokens_per_s", "tok/s", "{:.0f}"), ("latency_s_mean", "latency s", "{:.3f}"),
           ("speedup_nfe", "speedup NFE", "{:.2f}x"), ("speedup_time", "speedup time", "{:.2f}x"),
           ("aup", "AUP (family)", "{:.1f}")]


def markdown_table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        cells = [fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_paths(output, overwrite: bool = False, name: str = "--output") -> tuple[Path, Path, Path]:
    """The results JSON, table and plot of an evaluation (`output` and its .md and .png beside it), checked
    before any work: a name that is one of the derived ones would be written twice, and existing files are
    replaced only when they are an earlier evaluation's (or with `overwrite`)."""
    from learn2pd.atomic import check_output

    out = Path(output)
    if out.suffix in (".md", ".png"):
        raise ValueError(f"{name} {out}: the table and plot go beside the results as .md and .png: name the JSON, "
                         f"e.g. {name} {out.with_suffix('.json')}")
    paths = (out, out.with_suffix(".md"), out.with_suffix(".png"))
    for path in paths:
        check_output(path, name, overwrite=overwrite)
    if not overwrite and not _is_report(out):
        taken = [p for p in paths if p.exists()]
        if taken:
            raise FileExistsError(f"{name} {out}: {taken[0]} exists and is not an earlier evaluation's: pass another "
                                  f"{name}, or --overwrite to replace it")
    return paths


def _is_report(path: Path) -> bool:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and {"results", "config"} <= set(report)


def write_json(path, payload: dict) -> Path:
    return write_atomic(path, json.dumps(payload, indent=2) + "\n")


def plot_pareto(results: list[dict], path) -> Path:
    """Accuracy against tokens per forward, one curve per policy family (name before ':'): the whole range on
    the left, and on the right a zoom on the fast and accurate corner where the parallel plans bunch."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families: dict[str, list] = {}
    for r in results:
        families.setdefault(r.get("family", r["policy"]), []).append((r["tpf"], r["accuracy"], r["policy"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    # Distinct colour and marker per family: the default 10-colour cycle repeats beyond ten families.
    colours, markers = plt.get_cmap("tab20").colors, "os^Dv<>pP*Xh"
    for ax in axes:
        for i, (fam, pts) in enumerate(sorted(families.items())):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)],
                    color=colours[(2 * i) % 20 + (i // 10) % 2], label=fam)
        ax.set_xlabel("tokens per forward (TPF)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log", base=2)
    axes[0].set_title("all plans (log scale)")
    # the zoom: plans within 10 points of the best and at least half the best TPF
    best_acc, best_tpf = max(r["accuracy"] for r in results), max(r["tpf"] for r in results)
    near = [r for r in results if r["accuracy"] >= best_acc - 10 and r["tpf"] >= best_tpf / 2] or results
    xs, ys = [r["tpf"] for r in near], [r["accuracy"] for r in near]
    pad_x, pad_y = max(0.05 * (max(xs) - min(xs)), 0.5), max(0.1 * (max(ys) - min(ys)), 0.5)
    axes[1].set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    axes[1].set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    axes[1].set_title(f"zoom: within 10 points of the best, TPF >= {best_tpf / 2:.0f}")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return write_atomic(path, buf.getvalue())
