"""Fast-dLLM confidence-threshold decoding (no cache): commit every candidate with confidence >= tau,
and always the most confident one so each step makes progress."""

from __future__ import annotations

from learn2pd.decoding.policies.base import UNIT, Policy
from learn2pd.decoding.state import top1_mask


class ThresholdPolicy(Policy):
    name = "threshold"
    bounds = {"tau": UNIT}

    def __init__(self, tau: float = 0.9):
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"threshold tau must be in [0, 1], got {tau}")
        self.tau = float(tau)

    def select(self, state):
        conf = state.candidate_confidence()
        return top1_mask(conf) | (conf >= self.tau)
