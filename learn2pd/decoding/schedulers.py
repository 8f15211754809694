"""Block schedulers: where the current block ends, decided at the block's first step.

AdaBlock-dLLM (Lu et al. 2025): look at the predictions of the block-start forward over a window of
25% of the generation length; if some position predicts a delimiter (newline, ...) and the most
confident such prediction reaches `tau_d`, the block ends at that delimiter (inclusive); otherwise it
is the default size `b0`. The same forward also serves the block's first commit (no extra NFE).
"""

from __future__ import annotations

import torch

from learn2pd.decoding.state import NEG_INF


class FixedBlocks:
    name = "fixed"

    def __init__(self, block_length: int):
        self.block_length = block_length

    def block_end(self, tokens, conf, block_start, gen_end, gen_length, spec):
        return torch.minimum(block_start + self.block_length, gen_end)


class AdaBlockScheduler:
    name = "adablock"

    def __init__(self, b0: int | None = None, tau_d: float | None = None, window: float = 0.25,
                 delimiters: tuple[int, ...] | None = None):
        self.b0, self.tau_d, self.window, self.delimiters = b0, tau_d, window, delimiters

    def block_end(self, tokens, conf, block_start, gen_end, gen_length, spec):
        """tokens/conf [B, G] of the block-start forward; block_start, gen_end [B] -> block end [B]."""
        b0 = self.b0 or 32
        tau_d = self.tau_d if self.tau_d is not None else (0.5 if spec.family == "dream" else 0.3)
        delims = torch.tensor(self.delimiters or spec.delimiter_ids, device=tokens.device, dtype=tokens.dtype)
        remaining = gen_end - block_start
        win = torch.clamp(remaining, max=int(self.window * gen_length))
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        in_win = (pos >= block_start[:, None]) & (pos < (block_start + win)[:, None])
        is_delim = in_win & torch.isin(tokens, delims)
        dconf = conf.masked_fill(~is_delim, NEG_INF)
        best_conf, best = dconf.max(-1)
        adaptive = is_delim.any(-1) & (best_conf >= tau_d)
        return torch.where(adaptive, best + 1, block_start + torch.clamp(remaining, max=b0))

    def describe(self) -> str:
        parts = [f"b0={self.b0}" if self.b0 else "", f"tau_d={self.tau_d}" if self.tau_d is not None else ""]
        return "adablock" + (":" + ",".join(p for p in parts if p) if any(parts) else "")
