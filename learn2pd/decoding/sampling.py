"""Predicted tokens and their confidences, as LLaDA computes them, without float64 copies of the logits.

LLaDA takes the argmax (or a Gumbel-max sample in float64) and the float64 softmax probability of it.
A float64 copy of [batch, gen, vocab] logits is tens of GB for LLaDA-8B (vocab 126,464) at batch 32 and
gen 1024, so the float64 work runs in chunks of positions, and only at the positions whose prediction is
read this step (`need`): the softmax of one position does not depend on the others, so the result is
bitwise the same as the whole-tensor computation (tested).
"""

from __future__ import annotations

import torch

from learn2pd.decoding.state import FedLogits

CHUNK_ELEMENTS = 1 << 20  # float64 elements per chunk: 8 MB, a few positions of a 126k vocabulary


def sample(logits: torch.Tensor, need: torch.Tensor, mask_id: int, temperature: float = 0.0,
           random_confidence: bool = False, generator: torch.Generator | None = None):
    """logits [B, G, V], need [B, G] bool -> tokens [B, G] long, confidence [B, G] float64.

    The mask token is never a prediction (committing it would never finish the block); confidences still
    come from the full softmax, so a trained model, which never predicts it, is unaffected. Outside `need`
    the token is the plain argmax and the confidence 0.
    """
    tokens = _argmax_without(logits, mask_id)
    conf = torch.zeros(tokens.shape, dtype=torch.float64, device=logits.device)
    B, G, V = logits.shape
    where = need.nonzero()
    step = max(1, CHUNK_ELEMENTS // V)
    for i in range(0, where.shape[0], step):
        b, p = where[i:i + step].unbind(1)
        x = logits[b, p].double()  # [chunk, V]
        if temperature > 0:
            # Gumbel-max as LLaDA's add_gumbel_noise: exp(l) / (-log u)^T, float64, mask excluded
            scores = x.clone()
            scores[:, mask_id] = float("-inf")
            u = torch.rand(x.shape, dtype=torch.float64, device=x.device, generator=generator)
            tok = (scores.exp() / (-torch.log(u)) ** temperature).argmax(-1)
            tokens[b, p] = tok
        else:
            tok = tokens[b, p]
        if not random_confidence:
            conf[b, p] = torch.softmax(x, -1).gather(-1, tok[:, None])[:, 0]
    if random_confidence:  # LLaDA's `random` remasking: a uniform score per position
        conf = torch.rand(tokens.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return tokens, conf


def _argmax_without(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Argmax over the vocabulary, the mask token excluded, without copying the logits: only positions
    whose argmax is the mask token are redone. Ties keep the first index, as argmax of a float64 copy does
    (upcasting is exact, so the order of values is the same)."""
    tokens = logits.argmax(-1)
    bad = tokens == mask_id
    if bool(bad.any()):
        redo = logits[bad].clone()
        redo[:, mask_id] = float("-inf")
        tokens[bad] = redo.argmax(-1)
    return tokens


def sample_fed(logits: FedLogits, need: torch.Tensor, mask_id: int, temperature: float = 0.0,
               random_confidence: bool = False, generator: torch.Generator | None = None):
    """`sample` on the positions a forward computed; [R, W] results, positions not computed get the mask
    token and confidence 0 (a cached step computes the positions it may commit)."""
    if logits.positions is None:
        return sample(logits.values, need, mask_id, temperature, random_confidence, generator)
    R, W = need.shape
    pos = logits.positions
    computed = pos >= 0
    cols_need = computed & need.gather(1, pos.clamp(min=0))
    tok, conf = sample(logits.values, cols_need, mask_id, temperature, random_confidence, generator)
    at = torch.where(computed, pos, W)  # padding columns land in a spare last column
    tokens = torch.full((R, W + 1), mask_id, dtype=torch.long, device=need.device).scatter(1, at, tok)
    confidence = torch.zeros((R, W + 1), dtype=torch.float64, device=need.device).scatter(1, at, conf)
    return tokens[:, :W], confidence[:, :W]
