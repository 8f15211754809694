"""The single place where the engine calls the model.

Everything that changes *which positions are recomputed* (classifier-free guidance's doubled batch,
logit realignment for Dream-style models, and later approximate KV caches) lives here, so the
decoding loop never touches the model directly.
"""

from __future__ import annotations

import torch

from learn2pd.models.spec import ModelSpec


class ModelRunner:
    def __init__(self, model, spec: ModelSpec, cfg_scale: float = 0.0):
        self.model, self.spec, self.cfg_scale = model, spec, cfg_scale

    @torch.no_grad()
    def logits(self, x: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int) -> torch.Tensor:
        """Logits [B, T, V] of the full sequences `x` ([B, T]); padded keys masked out."""
        mask = attention_mask if not bool(attention_mask.all()) else None
        if self.cfg_scale > 0:
            uncond = x.clone()
            uncond[:, :prompt_width] = self.spec.mask_id
            both = self._call(torch.cat([x, uncond]), None if mask is None else torch.cat([mask, mask]))
            cond, un = both.chunk(2)
            logits = un + (self.cfg_scale + 1) * (cond - un)
        else:
            logits = self._call(x, mask)
        if self.spec.logit_shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def _call(self, x, mask):
        return self.model(x, attention_mask=mask).logits
