"""Can the model fill the digit of a sorted list that one-token-at-a-time decoding leaves for last?

    python benchmarks/sort_probe.py [--model checkpoints/tiny-llada] [--num-samples 200]

For held-out sort lists, the true answer (and its end) visible with k digits masked, one forward each:
- `random`: k digits drawn at random.
- `least confident`: the k digits the model is least sure of with the whole answer masked, the ones
  low-confidence decoding commits last.
A row counts as right when every masked digit is. The gap between the two is what training on random
masks leaves out of the states decoding visits (the pretrainer's `ordered_fraction`).
"""

from __future__ import annotations

import argparse
import random

import torch

from learn2pd.models.loading import load_model
from learn2pd.tasks.prompting import format_prompt, left_pad
from learn2pd.tasks.suite import heldout_problems


@torch.no_grad()
def predict(model, tok, rows: list[list[int]]) -> torch.Tensor:
    """Logits of left-padded rows, aligned on the right (every row ends at its answer's first EOS)."""
    ids, attn = left_pad(rows, tok.eos_token_id)
    return model(ids, attention_mask=attn).logits.float()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the embedded checkpoints/tiny-llada")
    ap.add_argument("--num-samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, tok, _ = load_model(args.model, dtype="float32")
    mask = tok.mask_token_id
    rng = random.Random(args.seed)
    prompts, answers = [], []
    for p in heldout_problems(("sort",), n=args.num_samples):
        prompts.append(format_prompt(tok, p.prompt))
        answers.append(tok(p.answer, add_special_tokens=False).input_ids + [tok.eos_token_id])
    # Confidence of each digit with the whole answer masked (the end visible).
    rows = [pr + [mask] * (len(a) - 1) + a[-1:] for pr, a in zip(prompts, answers)]
    conf = predict(model, tok, rows).softmax(-1).amax(-1)
    print(f"{'masked':>6}  {'which':<15}  {'n':>4}  {'accuracy':>8}")
    for k in (1, 2, 3):
        for which in ("random", "least confident"):
            rows, hidden = [], []
            for i, (pr, a) in enumerate(zip(prompts, answers)):
                digits = list(range(0, len(a) - 1, 2))  # "d d d": digits at even offsets
                if len(digits) < k:
                    continue
                if which == "random":
                    hide = rng.sample(digits, k)
                else:
                    tail = conf[i, -len(a):]  # rows are right-aligned
                    hide = sorted(digits, key=lambda j: tail[j].item())[:k]
                rows.append(pr + [mask if j in hide else t for j, t in enumerate(a)])
                hidden.append((a, hide))
            pred = predict(model, tok, rows).argmax(-1)
            right = sum(all(pred[r, j - len(a)].item() == a[j] for j in hide) for r, (a, hide) in enumerate(hidden))
            print(f"{k:>6}  {which:<15}  {len(rows):>4}  {100 * right / len(rows):>7.1f}%")


if __name__ == "__main__":
    main()
