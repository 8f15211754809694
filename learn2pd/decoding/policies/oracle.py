"""The oracle ("extremely greedy parallel", Learn2PD): commit exactly the candidates whose prediction
already equals the reference output (the model's own vanilla decode).

It is a bound, not a decoder: when no candidate matches, it writes the reference token at the most
confident candidate (counted in `forced`), so its output always equals the reference and its NFE is
the fewest any filter over these predictions could reach.
"""

from __future__ import annotations

import torch

from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.state import top1_mask


class OraclePolicy(Policy):
    name = "oracle"
    needs_reference = True

    def __init__(self):
        self.forced = 0

    def select(self, state):
        if state.reference is None:
            raise ValueError("the oracle policy needs reference tokens (the vanilla decode of the same prompts)")
        correct = state.candidates & (state.tokens == state.reference)
        stuck = ~correct.any(-1)
        forced = top1_mask(state.candidate_confidence()) & stuck[:, None]
        self.forced += int(forced.any(-1).sum())
        # Forced positions take the reference token, so the output never leaves the reference.
        state.tokens = torch.where(forced, state.reference, state.tokens)
        return correct | forced

    def end_of_text_position(self, state, is_end):
        """Cut only where the reference ends too: the first end prediction that matches it, else none."""
        agree = is_end & (state.tokens == state.reference)
        first = agree.int().argmax(-1)
        return torch.where(agree.any(-1), first, torch.full_like(first, -1))

    def describe(self) -> str:
        return self.name
