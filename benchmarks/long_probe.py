"""Has a model learnt the long families' lines? One forward per probe, no decoding policy involved.

    python benchmarks/long_probe.py [--model DIR] [--num-samples 50] [--gen-length 256]

Per family (chain, table), on held-out problems:
- line 1 from nothing: the whole region masked, is the first line predicted right (every token)?
- next line given the ones above: lines 1..k visible (k = 1, 2, 3, 7), everything after masked, is line
  k+1 predicted right? The state semi-autoregressive decoding is in. A chain line reads the prompt's
  operation of its label (128 tokens back) and the result of the line above; a table line reads the
  prompt's operation of the same label (lines 1-4) or line k-4 (line 8), 32 tokens back.
A model that solves a family one token at a time must score near 100% on the second probe.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from learn2pd.models.loading import load_model
from learn2pd.tasks.prompting import format_prompt
from learn2pd.tasks.suite import LONG_FAMILIES, heldout_problems


@torch.no_grad()
def probe(model, spec, prompt: list[int], answer: list[int], lines: list[str], gen_length: int, shown: int) -> bool:
    """Is line `shown + 1` predicted right with lines 1..shown visible and the rest masked?"""
    start = sum(len(line) + 1 for line in lines[:shown])  # one token per character
    end = start + len(lines[shown])
    region = answer[:start] + [spec.mask_id] * (gen_length - start)
    logits = model(torch.tensor([prompt + region])).logits[0, len(prompt):]
    return logits[start:end].argmax(-1).tolist() == answer[start:end]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint folder (default: the embedded tiny LLaDA)")
    ap.add_argument("--num-samples", type=int, default=50, help="held-out problems per family")
    ap.add_argument("--gen-length", type=int, default=256)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    model, tok, spec = load_model(args.model, dtype=args.dtype)
    model.eval()
    print(f"{args.model or 'embedded tiny LLaDA'}: {args.num_samples} held-out problems per family, "
          f"gen {args.gen_length}, % of lines predicted right in one forward")
    lengths = sorted(len(tok(p.answer, add_special_tokens=False).input_ids)
                     for p in heldout_problems(LONG_FAMILIES, 2 * args.num_samples))
    print(f"answer tokens of these problems: median {statistics.median(lengths)}, {lengths[0]}-{lengths[-1]}; "
          f"{100.0 * sum(n + 1 > 64 for n in lengths) / len(lengths):.0f}% end (first EOS) in block 3 or later")
    print(f"{'family':>7} {'line 1 from nothing':>20} {'line 2 | 1':>11} {'line 3 | 1-2':>13} {'line 4 | 1-3':>13} "
          f"{'line 8 | 1-7':>13}")
    for family in LONG_FAMILIES:
        problems = heldout_problems((family,), args.num_samples)
        encoded = [(format_prompt(tok, p.prompt), tok(p.answer, add_special_tokens=False).input_ids,
                    p.answer.split("\n")) for p in problems]
        rates = [100.0 * sum(probe(model, spec, *e, args.gen_length, k) for e in encoded) / len(encoded)
                 for k in (0, 1, 2, 3, 7)]
        print(f"{family:>7} {rates[0]:20.1f} {rates[1]:11.1f} {rates[2]:13.1f} {rates[3]:13.1f} {rates[4]:13.1f}")


if __name__ == "__main__":
    main()
