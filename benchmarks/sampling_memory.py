"""Peak memory and time of picking tokens and confidences from LLaDA-8B-sized logits.

    python benchmarks/sampling_memory.py [--batch 4 --gen 256 --vocab 126464]

Each variant runs in its own process on the same random float32 logits; peak is the process's maximum
resident memory above what it held once the logits existed. Variants: the whole-tensor float64 rule
(a float64 copy of the logits, a masked clone and a float64 softmax, as the engine computed it before),
learn2pd's chunked `sample` on every position, and on the 32 positions of one block per row.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def whole_tensor(logits, mask_id):
    logits64 = logits.double()
    scores = logits64.clone()
    scores[..., mask_id] = float("-inf")
    tokens = scores.argmax(-1)
    return tokens, torch.softmax(logits64, -1).gather(-1, tokens[..., None])[..., 0]


def run_variant(name: str, batch: int, gen: int, vocab: int) -> dict:
    from learn2pd.decoding.sampling import sample

    torch.set_num_threads(2)
    logits = torch.randn(batch, gen, vocab, generator=torch.Generator().manual_seed(0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if name == "whole-tensor float64":
        tokens, conf = whole_tensor(logits, 0)
    else:
        need = torch.ones(batch, gen, dtype=torch.bool)
        if name == "chunked, one block":
            need[:, 32:] = False
        tokens, conf = sample(logits, need, 0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base  # KiB on Linux
    return {"variant": name, "peak_gb": peak * 1024 / 1e9, "seconds": seconds,
            "checksum": float(conf[:, :32].sum()), "tokens": int(tokens[:, :32].sum())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=126464)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.batch, args.gen, args.vocab)))
        return
    print(f"logits [{args.batch}, {args.gen}, {args.vocab}] float32 "
          f"({args.batch * args.gen * args.vocab * 4 / 1e9:.2f} GB), torch {torch.__version__}")
    rows = []
    for name in ("whole-tensor float64", "chunked, every position", "chunked, one block"):
        out = subprocess.run([sys.executable, __file__, "--variant", name, "--batch", str(args.batch), "--gen",
                              str(args.gen), "--vocab", str(args.vocab)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout))
    ref = rows[0]
    print(f"{'variant':>26} {'peak GB':>8} {'seconds':>8} {'same block result':>18}")
    for r in rows:
        same = r["checksum"] == ref["checksum"] and r["tokens"] == ref["tokens"]
        print(f"{r['variant']:>26} {r['peak_gb']:8.2f} {r['seconds']:8.2f} {str(same):>18}")


if __name__ == "__main__":
    main()
