"""Per-position features of a block, computed the same way from traces (training) and live (decoding).

Every feature is a [N, block_length] float tensor; `block_features` stacks the requested ones into
[N, block_length, F]. Padding positions (beyond `length`) are zero.
"""

from __future__ import annotations

import torch

LEFT = 32  # masked_left's window: fixed, so that it means the same at every block length
FEATURES = {
    "confidence": "softmax probability of the argmax token",
    "margin": "top-1 minus top-2 probability",
    "entropy": "entropy of the prediction (nats)",
    "masked": "1 if the position is still masked",
    "stable": "steps the argmax has stayed unchanged in this block (capped at 8, divided by 8)",
    "is_end": "1 if the argmax is an end-of-text token",
    "pos_in_block": "relative position in the block (0..1)",
    "pos_in_answer": "block_start / gen_length (how far into the answer the block is)",
    "position": "the position's own index in the generation region / gen_length (any block length)",
    "masked_left": f"share of the {LEFT} positions to the left still masked (what a prediction may yet depend on)",
}
# Features that measure a position inside a block of the trained length: a filter reading one serves
# only that block length. Every other feature means the same at block 32 and in full diffusion.
BLOCK_BOUND = {"pos_in_block"}


def logit_features(block_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """margin and entropy [N, L] of block logits [N, L, V] (float32 softmax: features, not decisions)."""
    probs = block_logits.float().softmax(-1)
    top2 = probs.topk(2, dim=-1).values
    return {"margin": top2[..., 0] - top2[..., 1], "entropy": -(probs * probs.clamp_min(1e-30).log()).sum(-1)}


def stable_update(prev_tokens: torch.Tensor, prev_stable: torch.Tensor, tokens: torch.Tensor,
                  continues: torch.Tensor) -> torch.Tensor:
    """The `stable` count after one step: +1 where the prediction is unchanged and the block goes on
    (`continues`, broadcast per row), else 0. Live decoding and trace loading both step it."""
    return torch.where(continues & (tokens == prev_tokens), prev_stable + 1, torch.zeros_like(prev_stable))


def stable_counts(prompt_id, block, step, token) -> torch.Tensor:
    """`stable` of every trace row ([N, L] tokens, rows ordered by prompt, block, step), by `stable_update`
    over the rows that continue a block: the k-th step of every block at once, k = 1, 2, ..."""
    pid, blk, stp = (torch.as_tensor(v).long() for v in (prompt_id, block, step))
    tok = torch.as_tensor(token).long()
    out = torch.zeros_like(tok)
    n = len(stp)
    if n == 0:
        return out
    cont = torch.zeros(n, dtype=torch.bool)
    cont[1:] = (pid[1:] == pid[:-1]) & (blk[1:] == blk[:-1]) & (stp[1:] > stp[:-1])
    starts = torch.nonzero(~cont)[:, 0]
    run = torch.arange(n) - starts[torch.searchsorted(starts, torch.arange(n), right=True) - 1]
    for k in range(1, int(run.max()) + 1):
        i = torch.nonzero(run == k)[:, 0]
        out[i] = stable_update(tok[i - 1], out[i - 1], tok[i], torch.ones(len(i), 1, dtype=torch.bool))
    return out


def masked_left(masked: torch.Tensor, window: int = LEFT) -> torch.Tensor:
    """[N, L] share of the `window` positions before each one that are still masked. Positions before the
    block count as committed: in semi-autoregressive decoding they are."""
    c = torch.nn.functional.pad(masked.float().cumsum(-1), (window + 1, 0))  # c[j + window + 1] = sum masked[:j+1]
    L = masked.shape[-1]
    return (c[..., window:window + L] - c[..., :L]) / window


def block_features(names, *, confidence, margin=None, entropy=None, masked=None, stable=None, is_end=None,
                   length=None, block_start=None, gen_length: int | None = None) -> torch.Tensor:
    """Stack features [N, L] (and per-row block_start [N]) into [N, L, F] in the order of `names`."""
    N, L = confidence.shape
    valid = torch.arange(L, device=confidence.device) < (length if length is not None else torch.full((N,), L,
                                                         device=confidence.device))[:, None]
    cols = []
    for name in names:
        if name == "confidence":
            v = confidence
        elif name == "margin":
            v = margin
        elif name == "entropy":
            v = entropy
        elif name == "masked":
            v = masked.float()
        elif name == "stable":
            v = stable.float().clamp(max=8) / 8
        elif name == "is_end":
            v = is_end.float()
        elif name == "pos_in_block":
            v = (torch.arange(L, device=confidence.device).float() / max(L - 1, 1)).expand(N, L)
        elif name == "pos_in_answer":
            v = (block_start.float() / gen_length)[:, None].expand(N, L)
        elif name == "masked_left":
            v = masked_left(masked)
        elif name == "position":
            v = (block_start.float()[:, None] + torch.arange(L, device=confidence.device)) / gen_length
        else:
            raise ValueError(f"unknown filter feature {name!r}: choose from {', '.join(FEATURES)}")
        if v is None:
            raise ValueError(f"feature {name!r} needs its input tensor")
        cols.append(v.float() * valid)
    return torch.stack(cols, -1)
