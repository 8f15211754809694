"""Log-likelihood of a continuation under a masked dLLM: the Monte-Carlo estimate of LLaDA's evaluation.

As LLaDA's `get_loglikelihood` (evaluation/eval_llada.py): each sample masks some of the continuation's T
tokens (the prompt stays clean), the cross-entropy of the masked positions is divided by the masked ratio,
and minus the mean over `mc_num` samples estimates log p(continuation | context) (the masked-diffusion bound).
Within a batch of b samples the masked counts are drawn as LLaDA draws them: a random offset k in [1, T],
then b counts evenly spaced from k over [1, T] (wrapping), each a uniformly random subset of the positions.
`is_greedy` is LLaDA's `suffix_greedy_prediction`: decode the T masked positions one token per step, most
confident first, and compare with the continuation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learn2pd.decoding.batching import decode_all
from learn2pd.decoding.config import DecodeConfig
from learn2pd.models.spec import ModelSpec


def mask_counts(b: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """[b] masked counts in [1, T], LLaDA's stratified draw."""
    k = int(torch.randint(1, T + 1, (), generator=generator))
    x = torch.round(torch.linspace(float(k), k + (b - 1) * (T / b), steps=b)).long()
    return (x - 1) % T + 1


def mask_rows(seq: torch.Tensor, prompt_len: int, counts: torch.Tensor, mask_id: int,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """[b, L] copies of `seq` with `counts[i]` random continuation positions masked; returns (ids, masked)."""
    b, T = len(counts), len(seq) - prompt_len
    chosen = torch.rand(b, T, generator=generator).argsort(1) < counts[:, None]  # a uniform subset of each size
    masked = torch.cat([torch.zeros(b, prompt_len, dtype=torch.bool), chosen], 1).to(seq.device)
    return torch.where(masked, mask_id, seq.expand(b, -1)), masked


@torch.no_grad()
def logits_for(model, spec: ModelSpec, ids: torch.Tensor, prompt_len: int, cfg_scale: float = 0.0) -> torch.Tensor:
    """Logits aligned with positions (Dream's shifted logits realigned), with LLaDA's classifier-free guidance."""
    if cfg_scale > 0:
        uncond = ids.clone()
        uncond[:, :prompt_len] = spec.mask_id
        cond, un = model(torch.cat([ids, uncond])).logits.chunk(2)
        logits = un + (cfg_scale + 1) * (cond - un)
    else:
        logits = model(ids).logits
    if spec.logit_shift:
        logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
    return logits


@torch.no_grad()
def mc_loglikelihood(model, spec: ModelSpec, prefix: list[int], target: list[int], mc_num: int = 128,
                     batch_size: int = 32, generator: torch.Generator | None = None, cfg_scale: float = 0.0) -> float:
    """The estimate of log p(target | prefix) from `mc_num` masked samples, `batch_size` per forward."""
    if not target:
        return 0.0
    generator = generator or torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    seq = torch.tensor(prefix + target, dtype=torch.long, device=device)
    P, T = len(prefix), len(target)
    total, done = 0.0, 0
    while done < mc_num:
        b = min(batch_size, mc_num - done)
        counts = mask_counts(b, T, generator)
        ids, masked = mask_rows(seq, P, counts, spec.mask_id, generator)
        logits = logits_for(model, spec, ids, P, cfg_scale)
        ce = F.cross_entropy(logits[masked].float(), seq.expand(b, -1)[masked], reduction="none")
        ratio = (counts.float() / T).to(device)[:, None].expand(b, len(seq))[masked]
        total += float((ce / ratio).sum())
        done += b
    return -total / mc_num


def greedy_matches(model, tokenizer, spec: ModelSpec, pairs: list[tuple[list[int], list[int]]], batch_size: int = 32,
                   cfg_scale: float = 0.0) -> list[bool]:
    """Per (prefix, target): does one-token-per-step low-confidence decoding of len(target) masked positions
    (one block) reproduce the target? Batched through the engine, one batch per target length."""
    result = [False] * len(pairs)
    by_len: dict[int, list[int]] = {}
    for i, (_, target) in enumerate(pairs):
        if target:
            by_len.setdefault(len(target), []).append(i)
    for T, idx in by_len.items():
        cfg = DecodeConfig(gen_length=T, block_length=T, steps=T, cfg_scale=cfg_scale)
        out = decode_all(model, tokenizer, spec, [pairs[i][0] for i in idx], "vanilla", cfg, batch_size)
        for row, i in enumerate(idx):
            result[i] = out.sequences[row].tolist() == pairs[i][1]
    return result
