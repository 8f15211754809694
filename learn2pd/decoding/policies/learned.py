"""Learn2PD's learned policy: a tiny filter accepts masked positions whose prediction it judges final.

Each step the filter scores the block's positions (features as in training); still-masked positions
with probability above `threshold` are committed, on top of a fallback that guarantees progress:
`vanilla` (as published: the LLaDA schedule's own commit), `threshold`, or `localleap` (the filter's
accepts become anchors; their neighbours are taken at the relaxed threshold). With an End-of-Text
predictor, EoTP cuts at its first confident end position instead of the most confident end token.
"""

from __future__ import annotations

from pathlib import Path

import torch

from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.policies.localleap import LocalLeapPolicy
from learn2pd.decoding.state import NEG_INF
from learn2pd.filters.features import block_features
from learn2pd.filters.models import load_filter

DEFAULT_FILTER = Path(__file__).resolve().parents[3] / "checkpoints" / "tiny-llada-filter"
DEFAULT_EOT = Path(__file__).resolve().parents[3] / "checkpoints" / "tiny-llada-eot"
LOGIT_FEATURES = {"margin", "entropy"}


class LearnedPolicy(Policy):
    name = "learned"

    def __init__(self, filter_module, threshold: float | None = None, fallback: Policy | None = None,
                 eot_module=None, eot_threshold: float | None = None, floor: float | None = None):
        from learn2pd.decoding.policies.vanilla import VanillaPolicy

        self.filter, self.eot = filter_module.eval(), eot_module.eval() if eot_module is not None else None
        self.threshold = float(threshold if threshold is not None else filter_module.config.threshold)
        # The EoT predictor's own threshold (set on validation by train-filter) unless one is given.
        self.eot_threshold = float(eot_threshold if eot_threshold is not None
                                   else eot_module.config.threshold if eot_module is not None else 0.5)
        self.fallback = fallback or VanillaPolicy()
        # Optional confidence floor under the filter's accepts: a filter trained on traces with almost no
        # wrong predictions learns to accept everything; the floor keeps the model's own doubt a veto.
        self.floor = float(floor) if floor is not None else None
        self.blk = filter_module.config.block_length
        feats = set(filter_module.config.features) | (set(eot_module.config.features) if eot_module else set())
        self.needs_logits = bool(feats & LOGIT_FEATURES)
        self._prev = self._stable = None
        self._accepted: torch.Tensor | None = None
        self._end_ids = torch.tensor([], dtype=torch.long)

    @classmethod
    def from_pretrained(cls, path=None, threshold: float | None = None, fallback: Policy | str | None = None,
                        eot_path=None, model_type: str | None = None, block_length: int | None = None,
                        floor: float | None = None):
        """Load a filter (and optionally an EoT predictor); refuse one trained for another model or block."""
        from learn2pd.decoding.policies import make_policy

        filt = load_filter(path or DEFAULT_FILTER)
        _check(filt.config, path or DEFAULT_FILTER, model_type, block_length)
        eot = load_filter(eot_path) if eot_path else None
        if isinstance(fallback, str):
            fallback = make_policy(fallback)
        return cls(filt, threshold, fallback, eot, floor=floor)

    def describe(self) -> str:
        floor = f",floor={self.floor}" if self.floor is not None else ""
        return f"learned:threshold={self.threshold}{floor}+fallback={self.fallback.describe()}"

    def check(self, cfg, spec) -> None:
        _check(self.filter.config, "(loaded filter)", spec.family, cfg.block_length)
        self._end_ids = torch.tensor(spec.end_ids)

    def reset(self, batch: int, width: int, device) -> None:
        self._prev = torch.full((batch, width), -1, dtype=torch.long, device=device)
        self._stable = torch.zeros((batch, width), dtype=torch.long, device=device)

    # -- per step -------------------------------------------------------------------------------
    def _block_view(self, state):
        width = state.confidence.shape[1]
        start = state.block.int().argmax(-1)
        length = state.block.sum(-1)
        idx = (start[:, None] + torch.arange(self.blk, device=start.device)).clamp(max=width - 1)
        return start, length, idx

    def _features(self, names, state, start, length, idx, stable):
        take = lambda t: t.gather(1, idx)  # noqa: E731
        kw = dict(confidence=take(state.confidence).float(), masked=take(state.masked), stable=take(stable),
                  length=length, block_start=start, gen_length=state.confidence.shape[1],
                  is_end=torch.isin(take(state.tokens), self._end_ids.to(idx.device)))
        if LOGIT_FEATURES & set(names):
            probs = state.logits.gather(1, idx[..., None].expand(-1, -1, state.logits.shape[-1])).float().softmax(-1)
            top2 = probs.topk(2, dim=-1).values
            kw["margin"] = top2[..., 0] - top2[..., 1]
            kw["entropy"] = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
        return block_features(names, **kw)

    @torch.no_grad()
    def select(self, state):
        rows = state.rows
        width = state.confidence.shape[1]
        stable = self._update_stable(state, rows, width)
        start, length, idx = self._block_view(state)
        feats = self._features(self.filter.config.features, state, start, length, idx, stable)
        self._to(feats.device)
        prob = torch.sigmoid(self.filter(feats))
        valid = torch.arange(self.blk, device=idx.device) < length[:, None]
        accept_blk = (prob > self.threshold) & valid
        if self.floor is not None:
            accept_blk &= state.confidence.gather(1, idx) >= self.floor
        accept = self._to_rows(accept_blk, start, width) & state.candidates
        self._accepted = accept
        if self.eot is not None:
            eprob = torch.sigmoid(self.eot(self._features(self.eot.config.features, state, start, length, idx, stable)))
            self._eot_prob = self._to_rows(eprob * valid, start, width)
        if isinstance(self.fallback, LocalLeapPolicy):  # the filter's accepts become anchors
            return accept | self.fallback.select(state, extra_anchors=accept)
        return accept | self.fallback.select(state)

    def _to_rows(self, values: torch.Tensor, start: torch.Tensor, width: int) -> torch.Tensor:
        """Block values [N, blk] back to row positions [N, width]. Scattered into a buffer `blk` wider,
        unclamped: a short last block's padding would otherwise land on (and race with) its last position."""
        cols = start[:, None] + torch.arange(self.blk, device=start.device)
        buf = torch.zeros(values.shape[0], width + self.blk, dtype=values.dtype, device=values.device)
        return buf.scatter(1, cols, values)[:, :width]

    def _to(self, device) -> None:
        """Run the filters where the model runs. They stay float32: a few thousand parameters cost nothing,
        and bf16 would round probabilities near the 0.96 threshold by ~0.004."""
        if next(self.filter.parameters()).device != device:
            self.filter.to(device)
            if self.eot is not None:
                self.eot.to(device)

    def _update_stable(self, state, rows, width):
        if self._prev is None or self._prev.shape[1] < width or int(rows.max()) >= self._prev.shape[0]:
            self.reset(int(rows.max()) + 1, width, state.tokens.device)
        prev, stable = self._prev[rows, :width], self._stable[rows, :width]
        fresh = (state.step_in_block == 0)[:, None]
        stable = torch.where(fresh | (state.tokens != prev), torch.zeros_like(stable), stable + 1)
        self._prev[rows, :width], self._stable[rows, :width] = state.tokens, stable
        return stable

    def end_of_text_position(self, state, is_end):
        """The EoT predictor's first confident end in the block, else the most confident end token."""
        fallback = state.confidence.masked_fill(~is_end, NEG_INF).argmax(-1)
        if self.eot is None:
            return fallback
        sure = is_end & (self._eot_prob > self.eot_threshold)
        return torch.where(sure.any(-1), sure.int().argmax(-1), fallback)


def _check(config, path, model_type, block_length) -> None:
    if model_type and config.model_type and config.model_type.lower() != model_type.lower():
        raise ValueError(f"filter {path} was trained on a {config.model_type!r} model, not {model_type!r}: "
                         "collect traces and train a filter for this model")
    if block_length and config.block_length != block_length:
        raise ValueError(f"filter {path} was trained for blocks of {config.block_length}, decoding uses "
                         f"{block_length}: pass --block-length {config.block_length} or train a new filter")
