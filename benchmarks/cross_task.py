"""Cross-task robustness: a filter trained on traces of the other task families, decoding an unseen one.

    python benchmarks/cross_task.py --unseen rev [--num-traces 512] [--num-samples 300] [--kind positionwise]
                                    [--seen arith,sort] [--gen-length 128]

Collects oracle-replay traces on training problems of the suite's other families only (or `--seen`'s),
trains the Learn2PD filter and the End-of-Text predictor on them, then evaluates vanilla and the learned
plans on held-out problems of the unseen family. Prints the table and each plan's accuracy minus vanilla's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from learn2pd.decoding.engine import DecodeConfig
from learn2pd.evaluation.report import markdown_table
from learn2pd.evaluation.runner import evaluate
from learn2pd.models.loading import load_model
from learn2pd.tasks.suite import FAMILIES, SUITE, default_gen_length, heldout_problems
from learn2pd.traces import CollectConfig, collect_traces
from learn2pd.trainers.train_filter import TrainFilterConfig, train_filter


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unseen", default="rev", choices=FAMILIES)
    ap.add_argument("--seen", help="families to train on, comma-separated (default: the suite's others)")
    ap.add_argument("--num-traces", type=int, default=512)
    ap.add_argument("--num-samples", type=int, default=300)
    ap.add_argument("--gen-length", type=int, help="default: 256 if a long family is involved, else 128")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--kind", default="learn2pd", choices=["learn2pd", "positionwise"], help="filter to train")
    ap.add_argument("--out", help="keep traces and filters here (default: a temporary folder)")
    args = ap.parse_args()
    seen = args.seen.split(",") if args.seen else [f for f in SUITE if f != args.unseen]
    if args.unseen in seen or not set(seen) <= set(FAMILIES):
        ap.error(f"--seen {','.join(seen)}: families of {', '.join(FAMILIES)}, without the unseen {args.unseen}")
    args.gen_length = args.gen_length or default_gen_length([*seen, args.unseen])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        traces = collect_traces(CollectConfig(out=str(out / "traces"), tasks="train:" + ",".join(seen),
                                              num_prompts=args.num_traces, reference_plan="vanilla+eotp",
                                              gen_length=args.gen_length, dtype=args.dtype), progress=True)
        common = dict(traces=str(traces.parent), log_dir=str(out / "logs"), wandb=False)
        filt = train_filter(TrainFilterConfig(out=str(out / "filter"), filter={"kind": args.kind}, **common), False)
        eot = train_filter(TrainFilterConfig(out=str(out / "eot"), target="eot",
                                             filter={"kind": "eot"}, **common), False)
        print(f"trained on {', '.join(seen)}: filter test AUROC {filt['test/auroc']:.3f}, "
              f"EoT test AUROC {eot['test/auroc']:.3f}")
        model, tok, spec = load_model(dtype=args.dtype)
        f, e = f"path={out / 'filter'}", f"eot={out / 'eot'}"
        plans = ["vanilla", "vanilla+eotp", f"learned:{f},{e}+eotp", f"learned:{f},{e}+localleap+eotp",
                 f"learned:{f},{e},floor=0.9+eotp", "oracle+eotp"]
        report = evaluate(model, tok, spec, heldout_problems([args.unseen], args.num_samples), plans,
                          DecodeConfig(gen_length=args.gen_length, block_length=32))
    print(f"unseen family {args.unseen!r} ({args.kind} filter), {args.num_samples} held-out problems, "
          f"gen {args.gen_length}, block 32")
    for r in report["results"]:
        r["policy"] = r["policy"].replace(f"{f},{e}", "cross-task")
    print(markdown_table(report["results"]))
    base = next(r["accuracy"] for r in report["results"] if r["policy"] == "vanilla")
    for r in report["results"]:
        if r["policy"] != "vanilla":
            print(f"{r['policy']}: {r['accuracy'] - base:+.1f} accuracy points vs vanilla")


if __name__ == "__main__":
    main()
