"""The single place where the engine calls the model.

Each step the engine describes what it feeds (`Feed`: which rows, their inputs and live positions, each
row's current block and whether this is the block's first step). Everything that changes how the
logits are computed lives here: classifier-free guidance's doubled batch, Dream-style logit
realignment, and Fast-dLLM's key/value caches:

- `prefix`: a block's first step is a full forward that refreshes the cache; later steps of the block
  feed the block and everything after it (to the live end), attending to the cached prefix;
- `dual`: later steps feed only the block, attending to cached keys and values before and after it.

Rows are independent: in one step some rows may open a block (full forward) while others are inside
one (cached forward); the two groups run as two model calls, and each row's fed positions, left
padding and End-of-Text cut are its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learn2pd.decoding.state import FedLogits
from learn2pd.models.spec import ModelSpec


@dataclass
class Feed:
    """One forward of the active rows. Positions of `block_*`, `input_end` and `live` are relative to the
    generation region, which starts at column `prompt_width` of `ids`."""

    rows: torch.Tensor  # [R] rows of the batch in this forward
    ids: torch.Tensor  # [R, P + W] left-padded prompt and the generation region up to the live width W
    attention: torch.Tensor  # [R, P + W] 1 for real keys (prompt padding and cut positions are 0)
    prompt_width: int  # P
    live: torch.Tensor  # [R, W] generation positions in the input (End-of-Text cuts removed)
    block_start: torch.Tensor  # [R] current block of each row
    block_end: torch.Tensor  # [R] its end (not yet chosen at the block's first step)
    block_first: torch.Tensor  # [R] bool: the block's first step (its end is chosen from this forward)
    input_end: torch.Tensor  # [R] end of each row's live input


class ModelRunner:
    def __init__(self, model, spec: ModelSpec, cfg_scale: float = 0.0, cache: str = "none",
                 batch: int = 0, length: int = 0):
        self.model, self.spec, self.cfg_scale, self.mode = model, spec, cfg_scale, cache
        self.calls = 0  # model calls (a step with a cache may need two: full rows and cached rows)
        self.cache = None
        if cache != "none":
            from learn2pd.models.kv_cache import KVCache

            self.cache = KVCache(model.config.num_hidden_layers, batch, length)

    @torch.no_grad()
    def logits(self, feed: Feed) -> tuple[FedLogits, torch.Tensor]:
        """Logits of this step's computed positions and [R] the positions each row fed."""
        fed_full = feed.attention.sum(1)
        if self.cache is None:
            return FedLogits(self._full(feed.ids, feed.attention, feed.prompt_width)), fed_full
        self.cache.keep(feed.rows)  # rows that finished leave the cache (compacted once)
        full = feed.block_first
        parts = []
        if bool(full.any()):
            parts.append((full, self._full(feed.ids[full], feed.attention[full], feed.prompt_width,
                                           rows=feed.rows[full]), None))
        if not bool(full.all()):
            parts.append((~full, *self._cached(feed, ~full)))
        R, W, V = len(feed.rows), feed.live.shape[1], parts[0][1].shape[-1]
        width = max(p[1].shape[1] for p in parts)
        values = parts[0][1].new_zeros(R, width, V)
        positions = torch.full((R, width), -1, dtype=torch.long, device=values.device)
        fed = fed_full.clone()
        for where, vals, pos, *count in parts:
            idx = where.nonzero()[:, 0]
            values[idx, :vals.shape[1]] = vals
            if pos is None:
                positions[idx, :W] = torch.arange(W, device=values.device)
            else:
                positions[idx, :pos.shape[1]] = pos
                fed[idx] = count[0]
        return FedLogits(values, positions), fed

    def _full(self, x, mask, prompt_width, rows=None):
        """Every position of rows `x`; with a cache their keys and values are stored (the refresh)."""
        kw = {} if self.cache is None else {"cache": self.cache, "cache_rows": rows}
        if self.cfg_scale > 0:
            uncond = x.clone()
            uncond[:, :prompt_width] = self.spec.mask_id
            both = self._call(torch.cat([x, uncond]), torch.cat([mask, mask]))
            cond, un = both.chunk(2)
            logits = un + (self.cfg_scale + 1) * (cond - un)
        else:
            logits = self._call(x, mask, **kw)
        if self.spec.logit_shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits[:, prompt_width:]

    def _cached(self, feed: Feed, where: torch.Tensor):
        """Rows inside a block: feed the block (dual) or the block to the live end (prefix). Returns the
        logits of the fed positions, their generation positions (-1: padding) and [R] tokens fed."""
        P, W = feed.prompt_width, feed.live.shape[1]
        start = feed.block_start[where]
        end = feed.block_end[where] if self.mode == "dual" else feed.input_end[where]
        end = torch.minimum(end, feed.input_end[where])
        # A shifted-logit model predicts position i from i - 1: feed one position more on the left (the
        # prompt's last token for the first block), so every block position gets its own prediction.
        shift = int(self.spec.logit_shift)
        start = start - shift
        count = end - start
        ar = torch.arange(int(count.max()), device=start.device)
        valid = ar < count[:, None]
        pos = torch.where(valid, start[:, None] + ar, -1)  # generation positions fed, -1 padding
        cols = P + pos.clamp(min=-shift)
        ids = torch.where(valid, feed.ids[where].gather(1, cols), self.spec.mask_id)
        write = torch.where(valid, cols, self.cache.scratch)  # padding slots write the scratch slot
        logits = self._call(ids, feed.attention[where], cache=self.cache, cache_rows=feed.rows[where],
                            cache_positions=write, cache_keys=P + W)
        if shift:
            logits, pos = logits[:, :-1], pos[:, 1:]
        return logits, pos, valid.sum(1)

    def _call(self, x, mask, **kw):
        self.calls += 1
        return self.model(x, attention_mask=mask if not bool(mask.all()) else None, **kw).logits
