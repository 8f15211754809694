"""GRPO for an unmasking policy: reward, group-relative advantage, clipped-ratio loss (no KL term).

A rollout is one decode of one prompt; the G rollouts of a prompt form its group. A rollout's actions are
its steps' Bernoulli commit decisions, one per candidate (masked position of the block). The loss clips the
probability ratio of each decision, averages the decisions of a rollout, then the rollouts: each rollout
weighs the same whatever its number of forwards (GRPO's per-sequence mean).
"""

from __future__ import annotations

import torch


def rollout_reward(correct: torch.Tensor, nfe: torch.Tensor, gen_length: int, alpha: float) -> torch.Tensor:
    """r = 1[correct] * ((L - min(NFE, L) + 1) / L) ** alpha, L the gen length: a wrong answer earns nothing,
    a right one more the fewer forwards it took (1 at one forward... up to 1/L at L)."""
    L = float(gen_length)
    speed = (L - torch.clamp(nfe.double(), max=L) + 1) / L
    return correct.double() * speed.clamp(max=1.0) ** alpha


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[P * G] rewards, each prompt's G rollouts contiguous -> reward minus its group's mean (no std
    normalisation: a group whose rollouts all scored the same teaches nothing, and gets zero)."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.view(-1, group_size)
    return (r - r.mean(-1, keepdim=True)).view(-1)


def bernoulli_log_prob(logits: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log p(action) of each Bernoulli decision with these logits (elementwise, stable for large logits)."""
    return -torch.nn.functional.binary_cross_entropy_with_logits(logits, action.to(logits.dtype), reduction="none")


def bernoulli_entropy(logits: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, p, reduction="none")


def decision_weights(rollout: torch.Tensor, num_rollouts: int) -> torch.Tensor:
    """[N] weight of each decision in the loss: 1 / (rollouts * decisions of its rollout), so the loss is the
    mean over rollouts of the mean over each rollout's decisions, and a sum over any split of the decisions
    (the update accumulates gradients chunk by chunk)."""
    count = torch.bincount(rollout, minlength=num_rollouts).clamp(min=1)
    return 1.0 / (num_rollouts * count[rollout].double())


def clipped_loss(logp_new: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor,
                 clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate over decisions: -sum_d w_d * min(ratio_d * A_d, clip(ratio_d) * A_d).

    logp_new, logp_old: [N] log-probabilities of the N decisions taken (old: detached, before this update);
    advantages: [N] the advantage of each decision's rollout; weights: [N] from `decision_weights`.
    Returns (loss, the share of these decisions whose ratio is outside [1 - clip, 1 + clip]).
    """
    ratio = torch.exp(logp_new - logp_old)
    clipped = ratio.clamp(1 - clip, 1 + clip)
    gain = torch.minimum(ratio * advantages, clipped * advantages)
    share = ((ratio < 1 - clip) | (ratio > 1 + clip)).float().mean() if ratio.numel() else ratio.new_zeros(())
    return -(weights.to(gain.dtype) * gain).sum(), share
