"""Block-length sweep: every plan at block 32, 64, 128 and the whole region (full diffusion).

    python benchmarks/block_sweep.py --tasks long --num-samples 200 [--block-lengths 32,64,128,256]
        [--policies "$(cat configs/eval/sweep_plans.txt)"] [--model checkpoints/tiny-dream] [--out DIR]

Prints one table per block length and, at each, the cheapest training-free plan within 1 point of
vanilla against the oracle's forwards; writes DIR/sweep.json and DIR/sweep.png (a panel per block).
Every (plan, block length) pair is checked before anything is decoded.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from learn2pd.cli import split_policies
from learn2pd.decoding.config import DecodeConfig
from learn2pd.evaluation.report import markdown_table, write_json
from learn2pd.evaluation.sweep import block_sweep, plot_sweep
from learn2pd.models.loading import load_model
from learn2pd.tasks.loaders import load_problems
from learn2pd.tasks.suite import default_gen_length

PLANS = Path(__file__).resolve().parents[1] / "configs" / "eval" / "sweep_plans.txt"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--tasks", default="long")
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--gen-length", type=int, default=None, help="default: the families' region (128 or 256)")
    ap.add_argument("--block-lengths", default=None, help="comma-separated (default 32,64,128,GEN)")
    ap.add_argument("--policies", default=None, help=f"default: {PLANS.relative_to(PLANS.parents[2])}")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--skip-unservable", action="store_true", help="leave out plans a block length refuses")
    ap.add_argument("--out", default=None, help="write sweep.json and sweep.png here")
    args = ap.parse_args()
    problems = load_problems(args.tasks, args.num_samples)
    gen = args.gen_length or default_gen_length(p.family for p in problems)
    blocks = [int(b) for b in args.block_lengths.split(",")] if args.block_lengths else \
        sorted({b for b in (32, 64, 128, gen) if b <= gen})
    policies = split_policies(args.policies or PLANS.read_text().strip())
    model, tok, spec = load_model(args.model, args.dtype)
    start = time.perf_counter()
    save = None
    if args.out:  # after each block length: a sweep stopped later keeps what it measured
        def save(sweep):
            write_json(Path(args.out) / "sweep.json", json.loads(json.dumps(sweep, default=str)))
    try:
        sweep = block_sweep(model, tok, spec, problems, policies, DecodeConfig(gen_length=gen), blocks,
                            args.batch_size, skip_unservable=args.skip_unservable, on_block=save)
    except ValueError as err:
        raise SystemExit(f"block_sweep: error: {err}\n(--skip-unservable leaves such pairs out)") from None
    print(f"{args.model or 'checkpoints/tiny-llada'}, {len(problems)} held-out problems ({args.tasks}), gen {gen}, "
          f"{time.perf_counter() - start:.0f} s")
    for plan, b, why in sweep["skipped"]:
        print(f"skipped {plan} at block {b}: {why}")
    for b, rep in sweep["blocks"].items():
        print(f"\n## block {b}\n")
        print(markdown_table(rep["results"]))
        fams = sorted({f for r in rep["results"] for f in r["per_family"]})
        print("\nper family (acc % / NFE):")
        for r in rep["results"]:
            fam = r["per_family"]
            print(f"  {r['policy']}: " + ", ".join(f"{f} {fam[f]['accuracy']:.1f}/{fam[f]['nfe_mean']:.2f}"
                                                   for f in fams))
        g = rep["gap"]
        if g:
            print(f"\nblock {b}: cheapest training-free plan within {g['tolerance']:g} point of vanilla: "
                  f"{g['heuristic']} {g['heuristic_accuracy']:.1f}% at {g['heuristic_nfe']:.2f} NFE = "
                  f"{g['ratio']:.2f}x the oracle's {g['oracle_nfe']:.2f}")
    if args.out:
        out = Path(args.out)
        plot_sweep(sweep, out / "sweep.png")
        print(f"wrote {out / 'sweep.json'} and {out / 'sweep.png'}")


if __name__ == "__main__":
    main()
