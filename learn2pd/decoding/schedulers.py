"""Block schedulers: where the current block ends, decided at the block's first step from that step's
forward (so a scheduler costs no NFE).

AdaBlock-dLLM (Lu et al. 2025): look at the predictions of the block-start forward over a window of
25% of the generation length; if some position predicts a delimiter (newline, ...) and the most
confident such prediction reaches `tau_d`, the block ends at that delimiter (inclusive); otherwise it
is the default size `b0` (the decoding's block length unless given), capped by what remains. Every
block is adaptive, the first included; blocks may be longer than b0 (up to the window).
"""

from __future__ import annotations

import torch

from learn2pd.configfile import Check
from learn2pd.decoding.state import NEG_INF


def delimiter_confidence(logits: torch.Tensor, tokens: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """exp(logit - logsumexp) of the predicted token at `where` ([B, G] bool), in the logits' own dtype, as
    the published `compute_block_length` computes it (not the float64 softmax of the commit rule): in bf16
    near-certain delimiters saturate to exactly 1.0 and the first of them wins. Elsewhere 0 (float64)."""
    out = torch.zeros(tokens.shape, dtype=torch.float64, device=tokens.device)
    b, p = where.nonzero().unbind(1)
    if b.numel():
        sel = logits[b, p]  # [n, V], own dtype
        conf = torch.exp(sel.gather(-1, tokens[b, p][:, None])[:, 0] - torch.logsumexp(sel, -1))
        out[b, p] = conf.double()
    return out


class Scheduler:
    """Chooses each row's block end at the block's first step."""

    name = "scheduler"
    bounds: dict[str, Check] = {}  # type and range of spec parameters

    def bind(self, cfg, spec) -> None:
        """Resolve defaults that depend on the decoding settings and the model (called by `decode`)."""
        self._block_length, self._gen_length, self._spec = cfg.block_length, cfg.gen_length, spec

    def horizon(self, block_start: torch.Tensor, gen_end: torch.Tensor) -> torch.Tensor:
        """[B] end of the positions whose predictions `block_end` reads (their confidences are computed)."""
        return torch.minimum(block_start + self._block_length, gen_end)

    def block_end(self, tokens, conf, logits, block_start, gen_end) -> torch.Tensor:
        """tokens/conf [B, G] and logits [B, G, V] of the block-start forward -> block end [B]."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class FixedBlocks(Scheduler):
    """Blocks of the decoding's block length (LLaDA's semi-autoregressive schedule)."""

    name = "fixed"

    def block_end(self, tokens, conf, logits, block_start, gen_end):
        return torch.minimum(block_start + self._block_length, gen_end)


class AdaBlockScheduler(Scheduler):
    name = "adablock"
    bounds = {"b0": Check(int, gt=0, optional=True), "tau_d": Check(float, ge=0, le=1, optional=True),
              "window": Check(float, gt=0)}

    def __init__(self, b0: int | None = None, tau_d: float | None = None, window: float = 0.25):
        if b0 is not None and int(b0) <= 0:
            raise ValueError(f"adablock b0 must be > 0, got {b0}")
        if tau_d is not None and not 0 <= float(tau_d) <= 1:
            raise ValueError(f"adablock tau_d must be in [0, 1], got {tau_d}")
        self.b0 = int(b0) if b0 is not None else None
        self.tau_d = float(tau_d) if tau_d is not None else None
        self.window = float(window)

    def bind(self, cfg, spec) -> None:
        super().bind(cfg, spec)
        self._b0 = self.b0 or cfg.block_length
        self._tau_d = self.tau_d if self.tau_d is not None else (0.5 if spec.family == "dream" else 0.3)
        self._win = int(self.window * cfg.gen_length)
        self._delims = torch.tensor(spec.delimiter_ids, dtype=torch.long)

    def horizon(self, block_start, gen_end):
        return torch.minimum(block_start + max(self._b0, self._win), gen_end)

    def block_end(self, tokens, conf, logits, block_start, gen_end):
        remaining = gen_end - block_start
        win = torch.clamp(remaining, max=self._win)
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        in_win = (pos >= block_start[:, None]) & (pos < (block_start + win)[:, None])
        is_delim = in_win & torch.isin(tokens, self._delims.to(tokens.device))
        dconf = delimiter_confidence(logits, tokens, is_delim).masked_fill(~is_delim, NEG_INF)
        best_conf, best = dconf.max(-1)  # ties: the first position, as the published torch.max
        adaptive = is_delim.any(-1) & (best_conf >= self._tau_d)
        return torch.where(adaptive, best + 1, block_start + torch.clamp(remaining, max=self._b0))

    def describe(self) -> str:
        parts = [f"b0={self.b0}" if self.b0 else "", f"tau_d={self.tau_d}" if self.tau_d is not None else "",
                 f"window={self.window}" if self.window != 0.25 else ""]
        parts = [p for p in parts if p]
        return "adablock" + (":" + ",".join(parts) if parts else "")
