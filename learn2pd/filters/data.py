"""Turn a traces dataset into filter training tensors, split by prompt (never by step)."""

from __future__ import annotations

import numpy as np
import torch

from learn2pd.filters.features import block_features, stable_counts


def split_prompts(prompt_ids, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, set[int]]:
    ids = np.array(sorted(set(int(p) for p in prompt_ids)))
    rng = np.random.default_rng(seed)
    rng.shuffle(ids)
    n_train = int(round(fractions[0] * len(ids)))
    n_val = int(round(fractions[1] * len(ids)))
    return {"train": set(ids[:n_train].tolist()), "val": set(ids[n_train:n_train + n_val].tolist()),
            "test": set(ids[n_train + n_val:].tolist())}


def trace_tensors(traces, features: list[str], gen_length: int, end_ids) -> dict[str, torch.Tensor]:
    """Features [N, L, F], filter labels, EoT labels and the loss mask, for every step row."""
    steps = traces["steps"].with_format("numpy")
    cols = {c: np.stack(steps[c]) if c in ("confidence", "margin", "entropy", "token", "masked", "label")
            else np.asarray(steps[c]) for c in ("prompt_id", "block", "step", "block_start", "length", "confidence",
                                                "margin", "entropy", "token", "masked", "label")}
    ends = dict(zip(traces["sequences"]["prompt_id"], traces["sequences"]["end_position"]))
    N, L = cols["confidence"].shape
    stable = stable_counts(cols["prompt_id"], cols["block"], cols["step"], cols["token"])  # same as live
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in cols.items()}
    feats = block_features(features, confidence=t["confidence"].float(), margin=t["margin"].float(),
                           entropy=t["entropy"].float(), masked=t["masked"], stable=stable,
                           is_end=torch.isin(t["token"].long(), torch.tensor(list(end_ids))),
                           length=t["length"].long(), block_start=t["block_start"].long(), gen_length=gen_length)
    end = torch.tensor([ends[int(p)] for p in cols["prompt_id"]])
    end = torch.where(end < 0, torch.full_like(end, 10**9), end)
    pos = t["block_start"].long()[:, None] + torch.arange(L)
    valid = torch.arange(L) < t["length"].long()[:, None]
    return {"features": feats, "label": t["label"].bool(), "eot_label": pos >= end[:, None],
            "loss_mask": t["masked"].bool() & valid, "prompt_id": t["prompt_id"].long()}
