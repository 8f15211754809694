"""What the learned filter adds to a decoding step, measured inside one decode.

    python benchmarks/filter_overhead.py [--filter checkpoints/tiny-llada-filter] [--num-samples 128]

Decodes held-out problems with `learned` plans and times, per batch step, the model forward, the whole
learned policy step and the fallback's own share of it. The filter's overhead is
(learned step - fallback step) / (time of a full decoding step); a step is one batched forward plus
everything the engine does around it.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from learn2pd.decoding.engine import DecodeConfig
from learn2pd.decoding.plan import DecodingPlan
from learn2pd.decoding.policies.learned import DEFAULT_EOT, DEFAULT_FILTER, LearnedPolicy
from learn2pd.decoding.runner import ModelRunner
from learn2pd.evaluation.runner import run_policy
from learn2pd.models.loading import load_model
from learn2pd.tasks.suite import heldout_problems

TIMES: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)


def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        TIMES[name] += time.perf_counter() - start
        CALLS[name] += 1
        return out
    return wrapper


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filter", default=str(DEFAULT_FILTER))
    ap.add_argument("--eot", default=str(DEFAULT_EOT))
    ap.add_argument("--num-samples", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    model, tok, spec = load_model(dtype=args.dtype)
    problems = heldout_problems(n=args.num_samples)
    cfg = DecodeConfig(gen_length=128, block_length=32)
    ModelRunner._call = timed("forward", ModelRunner._call)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.num_samples} problems, "
          f"gen 128, {args.dtype}")
    print(f"{'plan':>34} {'NFE':>6} {'step ms':>8} {'forward ms':>10} {'filter ms':>9} {'overhead':>8}")
    for fallback in ("vanilla", "threshold:tau=0.9", "localleap"):
        policy = LearnedPolicy.from_pretrained(args.filter, fallback=fallback, eot_path=args.eot)
        policy.select = timed("learned", policy.select)
        policy.fallback.select = timed("fallback", policy.fallback.select)
        TIMES.clear(), CALLS.clear()
        start = time.perf_counter()
        plan = DecodingPlan(policy, eotp=True, spec=f"learned+{fallback}+eotp")
        result = run_policy(model, tok, spec, problems, plan, cfg, args.batch_size, progress=False)
        wall = time.perf_counter() - start
        steps = CALLS["forward"]
        filter_s = TIMES["learned"] - TIMES["fallback"]
        forward_ms = 1e3 * TIMES["forward"] / steps
        print(f"{plan.spec:>34} {result['nfe_mean']:6.1f} {1e3 * wall / steps:8.2f} {forward_ms:10.2f} "
              f"{1e3 * filter_s / steps:9.3f} {100 * filter_s / wall:7.2f}%")


if __name__ == "__main__":
    main()
