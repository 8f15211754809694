"""Rollouts of the frozen dLLM with an unmasking policy sampling its commits, and the GRPO update on them.

`collect_rollouts` decodes each prompt `group_size` times through the batched engine (rows prompt-major:
prompt 0's G rollouts, then prompt 1's, ...), grades the outputs with each problem's own grader and
stacks every recorded step. `grpo_update` takes the clipped-ratio steps on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learn2pd.decoding.batching import decode_batch, encode_prompts
from learn2pd.decoding.config import DecodeConfig
from learn2pd.decoding.plan import DecodingPlan
from learn2pd.decoding.policies.rl import RLPolicy
from learn2pd.rl import grpo


@dataclass
class Rollouts:
    correct: torch.Tensor  # [N] bool, N = prompts * group_size
    nfe: torch.Tensor  # [N] forwards of each rollout
    features: torch.Tensor  # [S, L, 3] every step of every rollout, padded to the longest block
    valid: torch.Tensor  # [S, L] inside the block
    candidates: torch.Tensor  # [S, L] decisions that count: masked positions of the block (see `collect_rollouts`)
    action: torch.Tensor  # [S, L] the sampled commits (before the at-least-one rule)
    rollout: torch.Tensor  # [S] which rollout each step belongs to

    def rewards(self, gen_length: int, alpha: float) -> torch.Tensor:
        return grpo.rollout_reward(self.correct, self.nfe, gen_length, alpha)


def collect_rollouts(model, tokenizer, spec, policy: RLPolicy, problems, group_size: int, dcfg: DecodeConfig,
                     eotp: bool, generator: torch.Generator, batch_size: int = 64) -> Rollouts:
    """Decode every problem `group_size` times with `policy` sampling from `generator`.

    Decisions that cannot change the outcome are dropped from the update, as they would only add noise to
    it: a step's only candidate (it is committed whatever the sample), and with End-of-Text Prediction the
    positions after the answer's first end token (cut to EOS, or after the end of the graded text). At a
    full-diffusion block's first forward those are most of the block.
    """
    encoded = encode_prompts(tokenizer, [p.prompt for p in problems])
    rows = [i for i in range(len(problems)) for _ in range(group_size)]
    plan = DecodingPlan(policy, eotp=eotp)
    correct, nfe, steps = [], [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        with policy.sampling(generator) as recorded:
            out = decode_batch(model, tokenizer, spec, [encoded[i] for i in chunk], plan, dcfg)
        correct += [problems[i].grade(text) for i, text in zip(chunk, out.texts)]
        nfe.append(out.nfe.cpu())
        seqs = out.sequences.cpu()
        is_end = torch.isin(seqs, torch.tensor(list(spec.end_ids)))
        end = torch.where(is_end.any(1), is_end.int().argmax(1), seqs.shape[1]) if eotp else \
            torch.full((seqs.shape[0],), seqs.shape[1])
        for s in recorded:
            pos = s["start"][:, None] + torch.arange(s["candidates"].shape[1])
            cand = s["candidates"] & (pos <= end[s["rows"], None])
            cand &= cand.sum(-1, keepdim=True) > 1
            steps.append({**s, "rows": s["rows"] + start, "candidates": cand})
    width = max(s["valid"].shape[1] for s in steps)

    def stack(key):
        return torch.cat([torch.nn.functional.pad(s[key], (0, 0, 0, width - s[key].shape[1])) if key == "features"
                          else torch.nn.functional.pad(s[key], (0, width - s[key].shape[1])) for s in steps])

    return Rollouts(torch.tensor(correct), torch.cat(nfe), stack("features"), stack("valid"), stack("candidates"),
                    stack("action"), torch.cat([s["rows"] for s in steps]))


def grpo_update(net, optimizer, rollouts: Rollouts, rewards: torch.Tensor, group_size: int, clip: float,
                epochs: int, max_grad_norm: float, backward=None, chunk: int = 256) -> dict:
    """`epochs` clipped-ratio gradient steps on one batch of rollouts (the old log-probs are the network's
    before the first step). Steps go through the network `chunk` at a time (gradients accumulate), so
    full-diffusion blocks of hundreds of positions fit in memory. Returns loss, entropy, clip share."""
    backward = backward or (lambda loss: loss.backward())
    adv = grpo.group_advantages(rewards, group_size).float()
    n = rewards.numel()
    cand = rollouts.candidates
    owner = rollouts.rollout[:, None].expand_as(cand)  # rollout of every decision
    weights = grpo.decision_weights(owner[cand], n)
    slices = [slice(i, i + chunk) for i in range(0, cand.shape[0], chunk)]

    def log_probs(sl, grad):
        with torch.set_grad_enabled(grad):
            logits = net(rollouts.features[sl], rollouts.valid[sl])
        return logits, grpo.bernoulli_log_prob(logits, rollouts.action[sl])[cand[sl]]

    with torch.no_grad():
        old, entropy = [], []
        for sl in slices:
            logits, lp = log_probs(sl, False)
            old.append(lp)
            entropy.append(grpo.bernoulli_entropy(logits)[cand[sl]])
        old_lp = torch.cat(old)
    offsets = torch.tensor([0] + [int(cand[sl].sum()) for sl in slices]).cumsum(0)
    net.train()
    losses, shares = [], []
    for _ in range(epochs):
        optimizer.zero_grad()
        total, clipped = 0.0, 0.0
        for k, sl in enumerate(slices):
            d = slice(int(offsets[k]), int(offsets[k + 1]))
            _, lp = log_probs(sl, True)
            loss, share = grpo.clipped_loss(lp, old_lp[d], adv[owner[sl][cand[sl]]], weights[d], clip)
            backward(loss)
            total += loss.item()
            clipped += float(share) * (d.stop - d.start)
        torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
        optimizer.step()
        losses.append(total)
        shares.append(clipped / max(int(offsets[-1]), 1))
    net.eval()
    return {"loss": losses[0], "entropy": float(torch.cat(entropy).mean()), "clip_share": shares[-1],
            "decisions": int(offsets[-1])}
