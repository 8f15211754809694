"""Batching prompts of mixed lengths: in the given order vs sorted by length (what learn2pd does).

    python benchmarks/batching.py [--num-prompts 64 --policy threshold:tau=0.9+eotp]

Prompts are held-out questions behind 0-5 solved examples (lengths vary several-fold). Prints, per
batching, the positions the model computed (exact, left padding included), the share of them that is
padding, the wall time (one run) and whether the outputs equal the one-at-a-time decode.
"""

from __future__ import annotations

import argparse
import itertools
import random
import time

import torch

from learn2pd.decoding.batching import decode_all, decode_batch, encode_prompts
from learn2pd.decoding.config import DecodeConfig
from learn2pd.decoding.runner import ModelRunner
from learn2pd.models.loading import load_model
from learn2pd.tasks.suite import heldout_problems, train_problems


def prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    shots = [f"{p.prompt} = {p.answer}" for p in itertools.islice(train_problems(), 64)]
    return [" ; ".join(rng.sample(shots, rng.randint(0, 5)) + [p.prompt]) for p in heldout_problems(n=n)]


COUNT = {"computed": 0, "real": 0}


def counting(call):
    def wrapper(self, x, mask):
        COUNT["computed"] += x.numel()
        COUNT["real"] += int(mask.sum()) if mask is not None else x.numel()
        return call(self, x, mask)
    return wrapper


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--policy", default="threshold:tau=0.9+eotp")
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    model, tok, spec = load_model(dtype=args.dtype)
    ModelRunner._call = counting(ModelRunner._call)
    cfg = DecodeConfig(gen_length=64, block_length=32)
    enc = [e for e in encode_prompts(tok, prompts(args.num_prompts)) if len(e) + cfg.gen_length <= spec.context_length]
    lengths = sorted(len(e) for e in enc)
    print(f"{len(enc)} prompts of {lengths[0]}-{lengths[-1]} tokens, {args.policy}, gen 64, {args.dtype}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'batching':>18} {'positions computed':>18} {'padding %':>9} {'seconds':>8} {'same output':>11}")
    first = None
    for name, size, sort in (("one at a time", 1, True), ("32, given order", 32, False), ("32, by length", 32, True),
                             ("8, by length", 8, True)):
        COUNT.update(computed=0, real=0)
        t0 = time.perf_counter()
        if sort:
            seqs = decode_all(model, tok, spec, enc, args.policy, cfg, batch_size=size).sequences
        else:
            seqs = torch.cat([decode_batch(model, tok, spec, enc[i:i + size], args.policy, cfg).sequences
                              for i in range(0, len(enc), size)])
        seconds = time.perf_counter() - t0
        first = seqs if first is None else first
        pad = 100 * (1 - COUNT["real"] / COUNT["computed"])
        print(f"{name:>18} {COUNT['computed']:18d} {pad:9.1f} {seconds:8.2f} {str(torch.equal(seqs, first)):>11}")


if __name__ == "__main__":
    main()
