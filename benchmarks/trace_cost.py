"""Wall time of trace collection against a plain vanilla decode of the same prompts, in one run.

    python benchmarks/trace_cost.py [--num-prompts 128] [--dtype float32] [--gen-length 128]

Times three jobs on the same training prompts, batch size and model: a vanilla decode (the reference
the traces need anyway), `collect-traces --mode reference` and `collect-traces --mode oracle-replay`
(both end to end: model load, decoding, recording, shard write and merge). Prints seconds and the
ratio of each collection mode to the vanilla decode.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from learn2pd.decoding.engine import decode
from learn2pd.models.loading import load_model
from learn2pd.tasks.loaders import load_problems
from learn2pd.tasks.prompting import format_prompt, left_pad
from learn2pd.traces import CollectConfig, collect_traces, load_traces


def vanilla_seconds(cfg: CollectConfig) -> tuple[float, int]:
    model, tok, spec = load_model(cfg.model, cfg.dtype, cfg.device)
    encoded = [format_prompt(tok, p.prompt) for p in load_problems(cfg.tasks, cfg.num_prompts)]
    start, nfe = time.perf_counter(), 0
    for i in range(0, len(encoded), cfg.batch_size):
        ids, mask = left_pad(encoded[i:i + cfg.batch_size], spec.pad_id)
        nfe += int(decode(model, spec, ids, mask, "vanilla", cfg.decode_config()).nfe.sum())
    return time.perf_counter() - start, nfe


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--gen-length", type=int, default=128)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    base = dict(num_prompts=args.num_prompts, batch_size=args.batch_size, gen_length=args.gen_length,
                block_length=args.block_length, dtype=args.dtype, reference_plan="vanilla")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.num_prompts} prompts, "
          f"gen {args.gen_length}, block {args.block_length}, {args.dtype}")
    vanilla, nfe = vanilla_seconds(CollectConfig(**base))
    print(f"{'vanilla decode':>28}: {vanilla:7.1f} s  ({nfe / args.num_prompts:.0f} NFE per prompt)")
    for mode in ("reference", "oracle-replay"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            path = collect_traces(CollectConfig(out=tmp, mode=mode, **base), progress=False)
            seconds = time.perf_counter() - start
            rows = len(load_traces(path)["steps"])
        print(f"{'collect-traces ' + mode:>28}: {seconds:7.1f} s  {seconds / vanilla:5.2f}x vanilla  "
              f"({rows} step rows)")


if __name__ == "__main__":
    main()
