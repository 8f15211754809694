"""LLaDA's low-confidence remasking: commit the schedule's quota of most confident candidates."""

from __future__ import annotations

from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.state import topk_mask


class VanillaPolicy(Policy):
    name = "vanilla"

    def select(self, state):
        return topk_mask(state.candidate_confidence(), state.quota)
