"""Per-position features of a block, computed the same way from traces (training) and live (decoding).

Every feature is a [N, block_length] float tensor; `block_features` stacks the requested ones into
[N, block_length, F]. Padding positions (beyond `length`) are zero.
"""

from __future__ import annotations

import torch

FEATURES = {
    "confidence": "softmax probability of the argmax token",
    "margin": "top-1 minus top-2 probability",
    "entropy": "entropy of the prediction (nats)",
    "masked": "1 if the position is still masked",
    "stable": "steps the argmax has stayed unchanged in this block (capped at 8, divided by 8)",
    "is_end": "1 if the argmax is an end-of-text token",
    "pos_in_block": "relative position in the block (0..1)",
    "pos_in_answer": "block_start / gen_length (how far into the answer the block is)",
}


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
        else:
            raise ValueError(f"unknown filter feature {name!r}: choose from {', '.join(FEATURES)}")
        if v is None:
            raise ValueError(f"feature {name!r} needs its input tensor")
        cols.append(v.float() * valid)
    return torch.stack(cols, -1)
