"""Dream's own decoding algorithms (`diffusion_generate`): origin, maskgit_plus, topk_margin, entropy.

Each step i of a block's `steps` (the whole region when --block-length equals --gen-length, as Dream
decodes; a block schedule otherwise, as Fast-dLLM's Dream port), with t = linspace(1, eps, steps + 1)[i]
and s the next value, in float32:

- `origin`: every masked position is revealed with probability 1 - s/t (all at the last step), its
  token sampled from the (top-p/top-k filtered) distribution;
- `maskgit_plus` / `topk_margin` / `entropy`: the int(masked * (1 - s/t)) masked positions (all at the
  last step) with the highest confidence: the top probability, the top-1 minus top-2 probability, or
  the negative entropy; chosen by top-k, or with `alg_temp` > 0 sampled from softmax(confidence/alg_temp).

Probabilities are taken in the logits' own dtype, as Dream does. Random draws (origin, temperature,
alg_temp) come from the policy's generator seeded with the decoding seed, in Dream's order, so a batch of
one reproduces `diffusion_generate` under `torch.manual_seed(seed)`. Deviation, as for every policy
here: the mask token is never a prediction (a trained model never predicts it; an untrained one would
never finish); where it is the top token the next one is taken.
"""

from __future__ import annotations

import torch

from learn2pd.configfile import Check
from learn2pd.decoding.policies.base import Policy


def filter_logits(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Dream's top-p then top-k filtering (removed entries at the dtype's minimum), in the logits' dtype."""
    low = torch.finfo(logits.dtype).min
    if top_p is not None and top_p < 1:
        ordered, idx = torch.sort(logits, descending=True)
        cum = torch.cumsum(torch.softmax(ordered, dim=-1), dim=-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()  # keep the first token past the threshold
        remove[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(remove).scatter(-1, idx, remove), low)
    if top_k is not None:
        k = min(int(top_k), logits.shape[-1])
        logits = logits.masked_fill(logits < torch.topk(logits, k)[0][..., -1, None], low)
    return logits


class DreamPolicy(Policy):
    name = alg = "maskgit_plus"
    needs_logits = True
    bounds = {"alg_temp": Check(float, ge=0, optional=True), "top_p": Check(float, gt=0, le=1, optional=True),
              "top_k": Check(int, gt=0, optional=True), "eps": Check(float, gt=0, le=1)}

    def __init__(self, alg_temp: float | None = None, top_p: float | None = None, top_k: int | None = None,
                 eps: float = 1e-3):
        if top_p is not None and not 0 < float(top_p) <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and int(top_k) <= 0:
            raise ValueError(f"top_k must be > 0, got {top_k}")
        self.alg_temp = float(alg_temp) if alg_temp else None
        self.top_p = float(top_p) if top_p is not None else None
        self.top_k = int(top_k) if top_k is not None else None
        self.eps = float(eps)
        self._x0: torch.Tensor | None = None

    def params(self) -> dict:
        out = {k: v for k, v in (("alg_temp", self.alg_temp), ("top_p", self.top_p), ("top_k", self.top_k))
               if v is not None}
        return out | ({"eps": self.eps} if self.eps != 1e-3 else {})

    def check(self, cfg, spec) -> None:
        self._temperature, self._steps, self._seed = cfg.temperature, cfg.steps_per_block, cfg.seed
        self._mask_id = spec.mask_id
        self._block = cfg.block_length
        self._timesteps = torch.linspace(1, self.eps, self._steps + 1)

    def reset(self, batch: int, width: int, device) -> None:
        self._generator = torch.Generator(device=device).manual_seed(self._seed)

    def _sample(self, logits: torch.Tensor):
        """Dream's sample_tokens on [n, V] logits -> (confidence, tokens), in the logits' dtype."""
        if self._temperature > 0:
            logits = logits / self._temperature
        logits = filter_logits(logits, self.top_p, self.top_k)
        probs = torch.softmax(logits, dim=-1)
        if self._temperature > 0:
            pick = probs.clone()
            pick[:, self._mask_id] = 0
            tokens = torch.multinomial(pick.float(), 1, generator=self._generator)[:, 0]
            conf = probs.gather(-1, tokens[:, None])[:, 0]
        else:
            conf, tokens = probs.max(dim=-1)
            bad = tokens == self._mask_id  # never the mask token: the next best instead
            if bool(bad.any()):
                alt = probs[bad].clone()
                alt[:, self._mask_id] = -1
                conf[bad], tokens[bad] = alt.max(dim=-1)
        if self.alg == "topk_margin":
            top2 = torch.sort(probs, dim=-1, descending=True)[0]
            conf = top2[:, 0] - top2[:, 1]
        elif self.alg == "entropy":
            conf = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
        return conf, tokens

    @torch.no_grad()
    def select(self, state):
        win = state.block_window(self._block)
        width, P = state.confidence.shape[1], state.prompt_width
        masked = win.take(state.candidates) & win.valid  # [R, blk]
        logits = state.logits.at(win.idx)[masked]  # [n, V], rows in order, as Dream's logits[mask_index]
        x0 = torch.full(masked.shape, self._mask_id, dtype=torch.long, device=masked.device)
        step = state.step_in_block.cpu().clamp(max=self._steps - 1)  # each row's step i in its block
        t, s = self._timesteps[step], self._timesteps[step + 1]
        last = (step >= self._steps - 1).to(masked.device)
        ratio = (1 - s / t).to(masked.device)  # float32, as Dream
        if self.alg == "origin":
            p = torch.where(last, torch.ones_like(ratio), ratio)[:, None].expand_as(masked)[masked]
            reveal = torch.rand(p.shape, generator=self._generator, device=p.device) < p
            tok = torch.full(p.shape, self._mask_id, dtype=torch.long, device=p.device)
            if bool(reveal.any()):
                tok[reveal] = self._sample(logits[reveal])[1]
            x0[masked] = tok
            chosen = torch.zeros_like(masked)
            chosen[masked] = reveal
            picked = win.scatter(chosen, width)
        else:
            conf, tok = self._sample(logits)
            x0[masked] = tok
            # Confidence over the whole input row (prompt columns -inf), as Dream ranks and samples it: the
            # row's length decides top-k's tie order and how many draws multinomial takes.
            window = torch.full(masked.shape, float("-inf"), dtype=logits.dtype, device=masked.device)
            window[masked] = conf
            full = torch.cat([window.new_full((masked.shape[0], P), float("-inf")),
                              win.scatter(window, width, fill=float("-inf"))], 1)
            n = masked.sum(-1).float()
            k = torch.where(last, n, n * ratio).int()
            picked = torch.zeros(full.shape, dtype=torch.bool, device=masked.device)
            for r in range(masked.shape[0]):  # per row: k differs once rows differ (End-of-Text cuts)
                kr = int(k[r])
                if kr <= 0:
                    continue
                if self.alg_temp is None:
                    idx = torch.topk(full[r], kr).indices
                else:
                    weights = torch.softmax(full[r] / self.alg_temp, dim=-1)
                    idx = torch.multinomial(weights.float(), kr, generator=self._generator)
                picked[r, idx] = True
            picked = picked[:, P:]
        self._x0 = win.scatter(x0, width)
        return picked & state.candidates

    def commit_tokens(self, state, commit):
        return self._x0


class OriginPolicy(DreamPolicy):
    name = alg = "origin"


class MaskGITPlusPolicy(DreamPolicy):
    name = alg = "maskgit_plus"


class TopkMarginPolicy(DreamPolicy):
    name = alg = "topk_margin"


class EntropyPolicy(DreamPolicy):
    name = alg = "entropy"
