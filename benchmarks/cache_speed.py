"""KV caches (none, prefix, dual) on the embedded model: accuracy, forwards, positions and wall time.

    python benchmarks/cache_speed.py [--tasks suite --num-samples 64 --gen-length 128 --repeats 3 --shots 0]

The same held-out problems for every plan and cache; runs interleave (plan by plan, the three caches in
turn, `--repeats` times) and report the median time, so the ratios come from one run on a shared
machine. `--shots K` puts K solved training problems of the same family before each question.

Also an estimate (labelled so) of the FLOPs of the same runs at LLaDA-8B's shapes: every forward of a
run is re-costed with 32 layers, width 4096, SwiGLU 12288, vocabulary 126,464 and the prompt replaced
by a 600-token (5-shot) one; and, per step, what each cache computes at gen 256 and 1024.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from learn2pd.decoding.config import CACHES, DecodeConfig
from learn2pd.decoding.plan import make_plan
from learn2pd.decoding.runner import ModelRunner
from learn2pd.evaluation.runner import run_policy
from learn2pd.models.loading import load_model
from learn2pd.tasks.fewshot import with_fewshot
from learn2pd.tasks.loaders import load_problems

L8B = dict(layers=32, d=4096, mlp=12288, vocab=126464)
PROMPT_8B = 600
CALLS: list[tuple[int, int]] = []  # (query positions, key positions) of each row in each forward


def flops(q: int, k: int, s=L8B) -> float:
    """Forward FLOPs of one row feeding q positions against k keys: projections and MLP, attention scores
    and values, and the LM head over the fed positions (LLaDA computes logits for every fed position)."""
    per_layer = 2 * q * (4 * s["d"] ** 2 + 3 * s["d"] * s["mlp"]) + 4 * q * k * s["d"]
    return s["layers"] * per_layer + 2 * q * s["d"] * s["vocab"]


def record():
    """Count what each forward fed, with the prompt re-sized to the 8B estimate's prompt."""
    full, cached = ModelRunner._full, ModelRunner._cached

    def _full(self, x, mask, prompt_width, rows=None):
        out = full(self, x, mask, prompt_width, rows)
        w = x.shape[1] - prompt_width
        CALLS.extend([(PROMPT_8B + w, PROMPT_8B + w)] * x.shape[0])
        return out

    def _cached(self, feed, where):
        logits, pos, fed = cached(self, feed, where)
        keys = PROMPT_8B + feed.live.shape[1]
        CALLS.extend((int(n), keys) for n in fed.tolist())
        return logits, pos, fed

    ModelRunner._full, ModelRunner._cached = _full, _cached


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--tasks", default="suite", help="suite, short, long, all or families (held-out problems)")
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--shots", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--plans", default="vanilla;threshold:tau=0.9;localleap;learned+eotp",
                    help="plans separated by ';'")
    args = ap.parse_args()
    model, tok, spec = load_model(dtype=args.dtype)
    problems = with_fewshot(load_problems(args.tasks, args.num_samples), args.shots)
    plans = [make_plan(p) for p in args.plans.split(";")]
    for cache in CACHES:  # warm-up: the first decode of a process pays one-off costs
        run_policy(model, tok, spec, problems[:2], plans[0], DecodeConfig(gen_length=args.gen_length,
                   block_length=args.block_length, cache=cache), args.batch_size, progress=False)
    record()
    print(f"{len(problems)} held-out problems of {args.tasks} ({args.shots}-shot), gen {args.gen_length}, "
          f"block {args.block_length}, "
          f"{next(model.parameters()).dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.repeats} interleaved runs")
    rows = {}
    for plan in plans:
        for _ in range(args.repeats):
            for cache in CACHES:
                cfg = DecodeConfig(gen_length=args.gen_length, block_length=args.block_length, cache=cache)
                CALLS.clear()
                r = run_policy(model, tok, spec, problems, plan, cfg, args.batch_size, progress=False)
                entry = rows.setdefault((plan.label, cache), {"r": r, "times": []})
                entry["times"].append(r["wall_time_s"])
                entry["flops"] = sum(flops(q, k) for q, k in CALLS) / len(problems)
    print(f"\n{'plan':>16} {'cache':>6} {'acc %':>6} {'NFE':>6} {'pos/fwd':>8} {'median s':>9} {'speedup':>8} "
          f"{'8B TFLOPs/answer (est.)':>24}")
    for plan in plans:
        base = statistics.median(rows[(plan.label, "none")]["times"])
        for cache in CACHES:
            e = rows[(plan.label, cache)]
            r, t = e["r"], statistics.median(e["times"])
            print(f"{plan.label:>16} {cache:>6} {r['accuracy']:6.1f} {r['nfe_mean']:6.1f} "
                  f"{r['positions_mean'] / r['nfe_mean']:8.1f} {t:9.2f} {base / t:7.2f}x {e['flops'] / 1e12:24.1f}")
    if ("vanilla", "none") in rows and ("learned+eotp", "dual") in rows:
        van = statistics.median(rows[("vanilla", "none")]["times"])
        best = statistics.median(rows[("learned+eotp", "dual")]["times"])
        print(f"\nlearned+eotp with the dual cache against vanilla without cache: {van / best:.1f}x wall time, "
              f"{rows[('vanilla', 'none')]['r']['nfe_mean'] / rows[('learned+eotp', 'dual')]['r']['nfe_mean']:.1f}x "
              f"fewer forwards")
    print("\nEstimate, not a measurement: FLOPs of one step at LLaDA-8B shapes, 600-token prompt, block 32")
    print(f"{'gen':>5} {'block':>12} {'no cache TF':>12} {'prefix TF':>10} {'dual TF':>8} {'dual saves':>10}")
    for gen in (256, 1024):
        total = PROMPT_8B + gen
        for name, start in (("first", 0), ("middle", gen // 2), ("last", gen - 32)):
            full, prefix, dual = flops(total, total), flops(gen - start, total), flops(32, total)
            print(f"{gen:>5} {name:>12} {full / 1e12:12.2f} {prefix / 1e12:10.2f} {dual / 1e12:8.2f} "
                  f"{full / dual:9.1f}x")


if __name__ == "__main__":
    main()
