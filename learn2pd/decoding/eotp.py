"""End-of-Text Prediction: once a block position predicts an end token, the answer ends there.

The cut is the policy's choice (`Policy.end_of_text_position`: the learned EoT predictor's first
confident end, the oracle's reference end) or by default the most confident end prediction of the
block. The token at the cut is committed, the rest of the row becomes EOS; with `drop` (as published)
those positions also leave the input, so later forwards are shorter and no block past the end runs.
"""

from __future__ import annotations

import torch


class EndOfText:
    def __init__(self, spec, drop: bool = True):
        self.end_ids, self.eos_id, self.mask_id, self.drop = spec.end_ids, spec.eos_id, spec.mask_id, drop

    def cut(self, gen, state, commit, policy, gen_end):
        """gen [R, W] after this step's commits -> (gen, commit with the cut token, new gen_end [R])."""
        is_end = state.candidates & torch.isin(state.tokens, torch.tensor(self.end_ids, device=gen.device))
        if not bool(is_end.any()):
            return gen, commit, gen_end
        cut = policy.end_of_text_position(state, is_end)
        has = is_end.any(-1) & (cut >= 0)  # a policy may decline to cut (-1)
        pos = torch.arange(gen.shape[1], device=gen.device)
        at_cut = has[:, None] & (pos == cut[:, None]) & (gen == self.mask_id)
        after = has[:, None] & (pos > cut[:, None])
        gen = torch.where(at_cut, state.tokens, gen)
        gen = torch.where(after, torch.full_like(gen, self.eos_id), gen)
        # the step's commits: the cut token joins them; commits past the cut became EOS padding
        return gen, (commit | at_cut) & ~after, torch.where(has, torch.minimum(cut + 1, gen_end), gen_end)
