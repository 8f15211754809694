"""Does the model compute a worked arith step from its own line, or guess it from the prompt?

    python benchmarks/arith_probe.py [--model checkpoints/tiny-llada] [--num-samples 200]

For the result of line k of held-out arith answers, two inputs, one forward each:
- `own line`: lines 1..k visible up to the '=', everything from line k's result on masked (the state
  semi-autoregressive decoding reaches). A model that learnt the step table is right here at every k.
- `all masked`: the whole answer masked: the result must be computed from the prompt in one forward.
  The gap between the two is what committing many lines in parallel costs.
Prints accuracy and mean confidence of the result token per line index.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from learn2pd.models.loading import load_model
from learn2pd.tasks.prompting import format_prompt, left_pad
from learn2pd.tasks.suite import heldout_problems


def probe_inputs(tok, problems, gen_length: int):
    """Rows (prompt + masked answer), the result position of each row, its target, line index and mode."""
    rows, where, meta = [], [], []
    for p in problems:
        prompt = format_prompt(tok, p.prompt)
        answer = tok(p.answer, add_special_tokens=False).input_ids
        answer += [tok.eos_token_id] * (gen_length - len(answer))
        start = 0
        for k, line in enumerate(p.answer.split("\n")[:-1]):  # the last line is '#<final>'
            result = start + line.index("=") + 1
            for mode in ("own line", "all masked"):
                first_masked = result if mode == "own line" else 0
                x = answer[:first_masked] + [tok.mask_token_id] * (gen_length - first_masked)
                rows.append(prompt + x)
                where.append((len(prompt) + result, answer[result]))
                meta.append((k + 1, mode))
            start += len(line) + 1
    return rows, where, meta


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the embedded checkpoints/tiny-llada")
    ap.add_argument("--num-samples", type=int, default=200)
    ap.add_argument("--gen-length", type=int, default=40)
    args = ap.parse_args()
    model, tok, _ = load_model(args.model, dtype="float32")
    rows, where, meta = probe_inputs(tok, heldout_problems(("arith",), n=args.num_samples), args.gen_length)
    stats = defaultdict(lambda: [0, 0, 0.0])
    for i in range(0, len(rows), 256):
        # rows share no padding convention with the engine: pad on the left and index from the right
        ids, attn = left_pad(rows[i:i + 256], tok.eos_token_id)
        probs = model(ids, attention_mask=attn).logits.float().softmax(-1)
        for j, (row, (pos, target), key) in enumerate(zip(rows[i:i + 256], where[i:i + 256], meta[i:i + 256])):
            p = probs[j, ids.shape[1] - len(row) + pos]
            s = stats[key]
            s[0] += int(p.argmax().item() == target)
            s[1] += 1
            s[2] += p.max().item()
    print(f"{'line':>4}  {'mode':<10}  {'n':>4}  {'accuracy':>8}  {'confidence':>10}")
    for (k, mode), (right, n, conf) in sorted(stats.items()):
        print(f"{k:>4}  {mode:<10}  {n:>4}  {100 * right / n:>7.1f}%  {conf / n:>10.2f}")


if __name__ == "__main__":
    main()
