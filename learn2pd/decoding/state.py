"""The per-step view a policy gets: batched tensors over the generation region, no Python loops."""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class FedLogits:
    """Logits of the positions a forward computed: `values` [R, F, V] for generation positions
    `positions` [R, F] (-1: a padding column). Without a cache every position is computed (F = W,
    `positions` None); with one, later steps of a block compute only what they feed."""

    values: torch.Tensor
    positions: torch.Tensor | None = None

    def columns(self, width: int) -> torch.Tensor:
        """[R, width] column of each generation position (-1: not computed this step)."""
        R = self.values.shape[0]
        if self.positions is None:
            return torch.arange(width, device=self.values.device).expand(R, width)
        cols = torch.full((R, width + 1), -1, dtype=torch.long, device=self.values.device)
        ar = torch.arange(self.positions.shape[1], device=self.values.device).expand_as(self.positions)
        cols.scatter_(1, torch.where(self.positions >= 0, self.positions, width), ar)
        return cols[:, :width]

    def at(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits [R, n, V] at generation positions idx [R, n] (positions not computed read column 0:
        callers only look at positions they asked to be computed)."""
        if self.positions is None:
            cols = idx
        else:
            width = int(max(int(idx.max()), int(self.positions.max()))) + 1
            cols = self.columns(width).gather(1, idx).clamp(min=0)
        return self.values.gather(1, cols[..., None].expand(-1, -1, self.values.shape[-1]))


@dataclass
class StepState:
    """One decoding step of the active rows. Positions are relative to the generation region.

    confidence: [B, G] float64 softmax probability of `tokens` (or random scores for `random` remasking);
                computed only where a prediction can be read this step (the row's block, and at a block's
                first step the scheduler's look-ahead); 0 elsewhere
    tokens:     [B, G] the model's predicted token ids (argmax, or Gumbel-max sample at temperature > 0);
                never rewritten by a policy (what a policy writes is `Policy.commit_tokens`)
    masked:     [B, G] still masked
    block:      [B, G] inside the row's current block
    step_in_block: [B] steps already taken in the current block
    quota:      [B] tokens the baseline (LLaDA) schedule commits at this step
    rows:       [B] indices of these rows in the full batch (for policies holding per-row data)
    logits:     FedLogits, only when the policy sets `needs_logits` (or an observer records): read them at
                block positions with `state.logits.at(idx)`
    reference:  [B, G] reference tokens (oracle only)
    prompt_width: columns of (left-padded) prompt before the generation region in the model's input
    G is the live width of this forward: positions cut by End-of-Text Prediction are not included.
    """

    confidence: torch.Tensor
    tokens: torch.Tensor
    masked: torch.Tensor
    block: torch.Tensor
    step_in_block: torch.Tensor
    quota: torch.Tensor
    rows: torch.Tensor
    logits: FedLogits | None = None
    reference: torch.Tensor | None = None
    prompt_width: int = 0

    @property
    def candidates(self) -> torch.Tensor:
        """Positions that may be committed now: masked and inside the current block."""
        return self.masked & self.block

    def candidate_confidence(self) -> torch.Tensor:
        """Confidence with -inf everywhere but the candidates (ready for top-k)."""
        return self.confidence.masked_fill(~self.candidates, NEG_INF)

    def block_window(self, length: int) -> BlockWindow:
        """The current block of each row as `length` columns (a filter's fixed input width)."""
        return BlockWindow.of(self.block, length)


@dataclass
class BlockWindow:
    """Columns [start, start + length) of each row: `idx` [B, length] gathers them (clamped to the row),
    `valid` [B, length] marks the columns inside the block. Traces and the learned policy both see a
    block through this one view, so a filter reads live exactly what it was trained on."""

    start: torch.Tensor  # [B]
    size: torch.Tensor  # [B] positions in the block
    idx: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def of(cls, block: torch.Tensor, length: int) -> BlockWindow:
        width = block.shape[1]
        start = block.int().argmax(-1)
        size = block.sum(-1)
        ar = torch.arange(length, device=block.device)
        return cls(start, size, (start[:, None] + ar).clamp(max=width - 1), ar < size[:, None])

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """[B, G] (or [B, G, V]) -> the window's columns [B, length] (or [B, length, V])."""
        if t.dim() == 3:
            return t.gather(1, self.idx[..., None].expand(-1, -1, t.shape[-1]))
        return t.gather(1, self.idx)

    def scatter(self, values: torch.Tensor, width: int, fill: float = 0) -> torch.Tensor:
        """Window values [B, length] back to row positions [B, width], `fill` elsewhere. Into a buffer
        `length` wider and unclamped: a short last block's padding would otherwise land on (and race with)
        its last position."""
        length = values.shape[1]
        cols = self.start[:, None] + torch.arange(length, device=values.device)
        buf = torch.full((values.shape[0], width + length), fill, dtype=values.dtype, device=values.device)
        return buf.scatter(1, cols, values)[:, :width]


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
