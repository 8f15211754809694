"""The per-step view a policy gets: batched tensors over the generation region, no Python loops."""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class StepState:
    """One decoding step of the active rows. Positions are relative to the generation region.

    confidence: [B, G] float64 softmax probability of `tokens` (or random scores for `random` remasking)
    tokens:     [B, G] predicted token ids (argmax, or Gumbel-max sample at temperature > 0)
    masked:     [B, G] still masked
    block:      [B, G] inside the row's current block
    step_in_block: [B] steps already taken in the current block
    quota:      [B] tokens the baseline (LLaDA) schedule commits at this step
    logits:     [B, G, V] only when the policy sets `needs_logits`
    rows:       [B] indices of these rows in the full batch (for policies holding per-row data)
    reference:  [B, G] reference tokens (oracle only)
    G is the live width of this forward: positions cut by End-of-Text Prediction are not included.
    """

    confidence: torch.Tensor
    tokens: torch.Tensor
    masked: torch.Tensor
    block: torch.Tensor
    step_in_block: torch.Tensor
    quota: torch.Tensor
    rows: torch.Tensor
    logits: torch.Tensor | None = None
    reference: torch.Tensor | None = None

    @property
    def candidates(self) -> torch.Tensor:
        """Positions that may be committed now: masked and inside the current block."""
        return self.masked & self.block

    def candidate_confidence(self) -> torch.Tensor:
        """Confidence with -inf everywhere but the candidates (ready for top-k)."""
        return self.confidence.masked_fill(~self.candidates, NEG_INF)


def topk_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the `k[b]` highest scores of each row (k may differ per row); -inf never wins."""
    order = scores.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))
    return (ranks < k[:, None]) & (scores > NEG_INF)


def top1_mask(scores: torch.Tensor) -> torch.Tensor:
    """The single best candidate of each row (rows with no candidate get none)."""
    best = torch.zeros_like(scores, dtype=torch.bool)
    best.scatter_(-1, scores.argmax(-1, keepdim=True), True)
    return best & (scores > NEG_INF)
