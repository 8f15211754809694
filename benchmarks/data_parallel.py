"""`learn2pd evaluate` in one process against `--devices 2` (two Lightning Fabric processes on the CPU).

    python benchmarks/data_parallel.py [--num-samples 64 --tasks short --devices 2]

Prints, per plan, the decoding wall time of each run (one process with all the machine's threads; two
processes with half each: the slowest rank's time, as `evaluate` reports it) and the ratio, then the whole
run (model loading and, for two processes, starting them) and whether outputs, grades and NFE per problem
agree. On a machine with few cores one process already keeps them busy: expect about 1x there; the
data-parallel gain is for one GPU per process.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from learn2pd.decoding.config import DecodeConfig
from learn2pd.evaluation.parallel import evaluate_parallel
from learn2pd.evaluation.runner import evaluate
from learn2pd.models.loading import load_model
from learn2pd.tasks.loaders import load_problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--tasks", default="short")
    # vanilla (gen-length forwards per problem) takes many minutes on a shared 2-core machine: add it by hand
    ap.add_argument("--policies", default="threshold:tau=0.9+eotp,learned+eotp")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--devices", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    policies = args.policies.split(",")
    cfg = DecodeConfig(gen_length=args.gen_length, block_length=32)
    problems = load_problems(args.tasks, args.num_samples)
    print(f"{len(problems)} problems ({args.tasks}), gen {args.gen_length}, {args.dtype}, {os.cpu_count()} CPU "
          f"cores, torch threads {torch.get_num_threads()} in one process")

    start = time.perf_counter()
    model, tok, spec = load_model(dtype=args.dtype)
    one = evaluate(model, tok, spec, problems, policies, cfg, progress=False)
    one_run = time.perf_counter() - start
    del model

    start = time.perf_counter()
    model_args = {"model": None, "dtype": args.dtype, "device": "cpu", "trust_remote_code": False}
    many = evaluate_parallel(model_args, problems, policies, cfg, progress=False, devices=args.devices)
    many_run = time.perf_counter() - start

    n = args.devices
    print(f"{'plan':>24} {'1 process s':>11} {f'{n} processes s':>13} {'ratio':>6} {'same records':>12}")
    same_all = True
    for a, b in zip(one["results"], many["results"]):
        same = [(r["output"], r["correct"], r["nfe"]) for r in a["records"]] == \
               [(r["output"], r["correct"], r["nfe"]) for r in b["records"]]
        same_all &= same
        print(f"{a['policy']:>24} {a['wall_time_s']:>11.2f} {b['wall_time_s']:>13.2f} "
              f"{a['wall_time_s'] / b['wall_time_s']:>5.2f}x {str(same):>12}")
    decode_one = sum(r["wall_time_s"] for r in one["results"])
    decode_many = sum(r["wall_time_s"] for r in many["results"])
    print(f"{'all plans':>24} {decode_one:>11.2f} {decode_many:>13.2f} {decode_one / decode_many:>5.2f}x "
          f"{str(same_all):>12}")
    print(f"whole run (loading, starting processes): 1 process {one_run:.1f} s, {n} processes {many_run:.1f} s")


if __name__ == "__main__":
    main()
