"""One plot of several block sweeps (the sweep.json files `block_sweep.py --out` writes), merged per block length.

    python benchmarks/plot_sweeps.py outputs/sweep/long200-heur/sweep.json outputs/sweep/long200-curves/sweep.json \\
        --blocks 32,256 --drop "threshold:tau=0.7+eotp" --out docs/pareto.png

A plan measured in several files keeps its first measurement. Each family of plans is one curve
(`learn2pd.evaluation.sweep.plot_sweep`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from learn2pd.evaluation.sweep import plot_sweep


def merge(paths, blocks=None, drop=()) -> dict:
    merged: dict[str, dict] = {}
    for path in paths:
        for b, rep in json.loads(Path(path).read_text())["blocks"].items():
            if blocks and int(b) not in blocks:
                continue
            seen = merged.setdefault(b, {"results": []})["results"]
            have = {r["policy"] for r in seen}
            seen.extend(r for r in rep["results"] if r["policy"] not in have and r["policy"] not in drop)
    if not merged:
        raise SystemExit(f"no block lengths {sorted(blocks or [])} in {', '.join(map(str, paths))}")
    return {"blocks": dict(sorted(merged.items(), key=lambda kv: int(kv[0])))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweeps", nargs="+", help="sweep.json files")
    ap.add_argument("--blocks", default=None, help="comma-separated block lengths to keep (default: all)")
    ap.add_argument("--drop", default="", help="semicolon-separated plans to leave out")
    ap.add_argument("--out", required=True, help="the PNG to write")
    args = ap.parse_args()
    blocks = {int(b) for b in args.blocks.split(",")} if args.blocks else None
    sweep = merge(args.sweeps, blocks, {d for d in args.drop.split(";") if d})
    plot_sweep(sweep, args.out)
    for b, rep in sweep["blocks"].items():
        print(f"block {b}: {len(rep['results'])} plans")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
