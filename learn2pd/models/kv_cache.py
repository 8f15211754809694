"""Keys and values of whole rows, for approximate KV caching in masked dLLMs (Fast-dLLM).

A masked dLLM attends bidirectionally, so no key is final while the answer changes; Fast-dLLM's caches
reuse keys and values computed at a block's first step for the rest of the block. This cache keeps, per
layer, keys (after RoPE: a key's rotation depends only on its own position) and values for every
position of every row, [rows, kv_heads, length + 1, head_dim]. A cached forward writes the fed
positions' fresh keys and values at their positions and attends over the whole row; the extra last
slot takes what padded query slots write and is never a valid key.

Rows are the batch's rows in `slots` order; when rows leave the batch the cache is compacted once, so a
step over all remaining rows reads the tensors without copying them.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layers: int, batch: int, length: int):
        self.length = length  # positions of a row; slot `length` is the scratch slot
        self.keys: list[torch.Tensor | None] = [None] * n_layers
        self.values: list[torch.Tensor | None] = [None] * n_layers
        self.slots = torch.arange(batch)  # batch row held in each cache row
        self._rows: torch.Tensor | None = None  # the rows of the forward in progress and their index
        self._index: torch.Tensor | None = None

    @property
    def scratch(self) -> int:
        return self.length

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every batch row not in `rows` (rows that finished), once."""
        rows = rows.cpu()
        if torch.equal(rows, self.slots):
            return
        index = torch.searchsorted(self.slots, rows)
        for layer, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                idx = index.to(k.device)
                self.keys[layer], self.values[layer] = k.index_select(0, idx), v.index_select(0, idx)
        self.slots, self._rows = rows, None

    def index(self, rows: torch.Tensor) -> torch.Tensor | None:
        """Cache rows of these batch rows (None: all of them, in order: no copy needed). Every layer of a
        forward passes the same `rows` tensor: the lookup (a device sync) runs once per forward."""
        if rows is not self._rows:
            cpu = rows.cpu()
            self._rows = rows
            self._index = None if torch.equal(cpu, self.slots) else torch.searchsorted(self.slots, cpu)
        return self._index

    def store(self, layer: int, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """A full forward of these rows: keys/values [R, H, T, D] of positions 0..T-1."""
        if self.keys[layer] is None:
            shape = (len(self.slots), k.shape[1], self.length + 1, k.shape[3])
            self.keys[layer] = k.new_zeros(shape)
            self.values[layer] = v.new_zeros(shape)
        idx = self.index(rows)
        T = k.shape[2]
        if idx is None:
            self.keys[layer][:, :, :T], self.values[layer][:, :, :T] = k, v
        else:
            idx = idx.to(k.device)
            self.keys[layer][idx, :, :T], self.values[layer][idx, :, :T] = k, v

    def update(self, layer: int, rows: torch.Tensor, positions: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write fed keys/values [R, H, T, D] at `positions` [R, T] (the scratch slot for padding) and return
        the rows' whole keys and values [R, H, length + 1, D]."""
        K, V = self.keys[layer], self.values[layer]
        if K is None:
            raise RuntimeError("a cached forward needs a full forward of the block first (the cache is empty)")
        idx = self.index(rows)
        if idx is not None:
            idx = idx.to(K.device)
            K, V = K.index_select(0, idx), V.index_select(0, idx)
        where = positions[:, None, :, None].expand(-1, K.shape[1], -1, K.shape[3])
        K.scatter_(2, where, k)
        V.scatter_(2, where, v)
        if idx is not None:  # write the fresh positions back into the persistent rows
            self.keys[layer].index_copy_(0, idx, K)
            self.values[layer].index_copy_(0, idx, V)
        return K, V


def through_cache(cache, k: torch.Tensor, v: torch.Tensor):
    """A layer's keys/values [R, H, T, D] through the cache protocol the models share: `cache` is None or
    (KVCache, layer, rows, write positions or None, keys). A full forward stores them; a fed forward writes
    them at their positions and returns the rows' first `keys` cached keys and values."""
    if cache is None:
        return k, v
    kv, layer, rows, write, n_keys = cache
    if write is None:
        kv.store(layer, rows, k, v)
        return k, v
    k, v = kv.update(layer, rows, write, k, v)
    return k[:, :, :n_keys], v[:, :, :n_keys]
