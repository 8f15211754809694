"""Fast-dLLM's factor rule: with candidate confidences sorted descending c_1 >= c_2 >= ..., commit
the top n whose c_i >= 1 - f / (i + 1) for i = 2..n (the first always).

Faithful to the public implementation's edge case: when only the last candidate fails, it is
committed all the same (the whole block is taken).
"""

from __future__ import annotations

import torch

from learn2pd.configfile import Check
from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.state import topk_mask


class FactorPolicy(Policy):
    name = "factor"
    bounds = {"factor": Check(float, gt=0)}

    def __init__(self, factor: float = 1.0):
        if factor <= 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        self.factor = float(factor)

    def select(self, state):
        conf = state.candidate_confidence()
        n = state.candidates.sum(-1)  # candidates per row
        ranked = conf.sort(dim=-1, descending=True).values
        i = torch.arange(conf.shape[-1], device=conf.device)
        # rank i (0-based) is the (i+1)-th token; float64 like the reference's Python floats (float32
        # thresholds are off by up to ~4e-8 and flip confidences that close to them)
        thresh = 1.0 - self.factor / (i.to(torch.float64) + 2.0)
        thresh[0] = -1.0
        fail = (ranked < thresh) & (i < n[:, None])
        first_fail = torch.where(fail.any(-1), fail.int().argmax(-1), n - 1)
        k = torch.where((first_fail == 0) | (first_fail == n - 1), first_fail + 1, first_fail)
        return topk_mask(conf, k)
