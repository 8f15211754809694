"""Decode speed of the embedded tiny dLLM per policy and dtype, measured in one run.

    python benchmarks/decode_speed.py [--num-samples 64] [--dtypes float32,bfloat16]

Prints NFE, wall time and tokens/s per (dtype, policy); ratios are within this run only.
"""

from __future__ import annotations

import argparse
import time

import torch

from learn2pd.decoding.engine import DecodeConfig
from learn2pd.evaluation.runner import run_policy
from learn2pd.models.loading import load_model
from learn2pd.tasks.suite import heldout_problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--policies", default="vanilla,vanilla+eotp,threshold:tau=0.9+eotp")
    args = ap.parse_args()
    problems = heldout_problems(n=args.num_samples)
    cfg = DecodeConfig(gen_length=128, block_length=32)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.num_samples} problems, gen 128")
    print(f"{'dtype':>9} {'policy':>26} {'acc %':>6} {'NFE':>7} {'wall s':>7} {'tok/s':>7}")
    for dtype in args.dtypes.split(","):
        model, tok, spec = load_model(dtype=dtype)
        for policy in args.policies.split(","):
            t0 = time.perf_counter()
            r = run_policy(model, tok, spec, problems, policy, cfg, args.batch_size, progress=False)
            print(f"{dtype:>9} {policy:>26} {r['accuracy']:6.1f} {r['nfe_mean']:7.1f} "
                  f"{time.perf_counter() - t0:7.1f} {r['tokens_per_s']:7.0f}")


if __name__ == "__main__":
    main()
