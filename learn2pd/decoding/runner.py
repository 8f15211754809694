"""The single place where the engine calls the model.

Each step the engine describes what it feeds (`Feed`: which rows, their inputs and live positions, each
row's current block and whether this is the block's first step). Everything that changes how the
logits are computed lives here: classifier-free guidance's doubled batch, Dream-style logit
realignment, and key/value caches, which need exactly that per-row description to know what to reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learn2pd.models.spec import ModelSpec


@dataclass
class Feed:
    """One forward of the active rows. Positions of `block_*` and `live` are relative to the generation
    region, which starts at column `prompt_width` of `ids`."""

    rows: torch.Tensor  # [R] rows of the batch in this forward
    ids: torch.Tensor  # [R, P + W] left-padded prompt and the generation region up to the live width W
    attention: torch.Tensor  # [R, P + W] 1 for real keys (prompt padding and cut positions are 0)
    prompt_width: int  # P
    live: torch.Tensor  # [R, W] generation positions in the input (End-of-Text cuts removed)
    block_start: torch.Tensor  # [R] current block of each row
    block_first: torch.Tensor  # [R] bool: the block's first step (its end is chosen from this forward)


class ModelRunner:
    def __init__(self, model, spec: ModelSpec, cfg_scale: float = 0.0):
        self.model, self.spec, self.cfg_scale = model, spec, cfg_scale

    @torch.no_grad()
    def logits(self, feed: Feed) -> torch.Tensor:
        """Logits [R, W, V] of the generation region (every position recomputed: no cache)."""
        x, mask = feed.ids, feed.attention
        mask = mask if not bool(mask.all()) else None
        if self.cfg_scale > 0:
            uncond = x.clone()
            uncond[:, :feed.prompt_width] = self.spec.mask_id
            both = self._call(torch.cat([x, uncond]), None if mask is None else torch.cat([mask, mask]))
            cond, un = both.chunk(2)
            logits = un + (self.cfg_scale + 1) * (cond - un)
        else:
            logits = self._call(x, mask)
        if self.spec.logit_shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits[:, feed.prompt_width:]

    def _call(self, x, mask):
        return self.model(x, attention_mask=mask).logits
