"""The oracle ("extremely greedy parallel", Learn2PD): commit exactly the candidates whose prediction
already equals the reference output (the model's own vanilla decode).

It is a bound, not a decoder: when no candidate matches (the row is stuck), it commits the most
confident candidate with the reference token written there, so its output always equals the reference
and its NFE is the fewest any filter over these predictions could reach. The written token travels in
`commit_tokens`; the step state keeps the model's own (wrong) prediction, which is what traces record.
"""

from __future__ import annotations

from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.state import top1_mask


class OraclePolicy(Policy):
    name = "oracle"
    needs_reference = True

    def select(self, state):
        if state.reference is None:
            raise ValueError("the oracle policy needs reference tokens (the vanilla decode of the same prompts)")
        correct = state.candidates & (state.tokens == state.reference)
        stuck = ~correct.any(-1)
        forced = top1_mask(state.candidate_confidence()) & stuck[:, None]
        return correct | forced

    def commit_tokens(self, state, commit):
        """The reference at every commit: equal to the prediction where it matched, forced where stuck."""
        return state.reference

    def end_of_text_position(self, state, is_end):
        """Cut only where the reference ends too: the first end prediction that matches it, else none."""
        agree = is_end & (state.tokens == state.reference)
        first = agree.int().argmax(-1)
        return first.masked_fill(~agree.any(-1), -1)
