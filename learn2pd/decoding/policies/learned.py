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

from learn2pd.configfile import Check
from learn2pd.decoding.policies.base import UNIT, Policy
from learn2pd.decoding.policies.localleap import LocalLeapPolicy
from learn2pd.filters.features import block_features, logit_features, stable_update
from learn2pd.filters.hub import resolve_filter
from learn2pd.filters.models import load_filter, serves_any_block

CHECKPOINTS = Path(__file__).resolve().parents[3] / "checkpoints"
LOGIT_FEATURES = {"margin", "entropy"}


def shipped(family: str, role: str) -> Path:
    """The shipped filter (role "filter") or End-of-Text predictor ("eot") of an embedded model family:
    what `learned` loads when no path is named, for the model it decodes."""
    return CHECKPOINTS / f"tiny-{family.lower()}-{role}"


DEFAULT_FILTER, DEFAULT_EOT = shipped("llada", "filter"), shipped("llada", "eot")  # before the model is known


class LearnedPolicy(Policy):
    name = "learned"
    takes_fallback = True
    bounds = {"threshold": UNIT, "floor": UNIT, "eot_threshold": UNIT, "path": Check(str), "eot": Check(str)}

    def __init__(self, filter_module, threshold: float | None = None, fallback: Policy | None = None,
                 eot_module=None, eot_threshold: float | None = None, floor: float | None = None,
                 path=None, eot_path=None):
        from learn2pd.decoding.policies.vanilla import VanillaPolicy

        self.filter, self.eot = filter_module.eval(), eot_module.eval() if eot_module is not None else None
        self.path, self.eot_path = path, eot_path  # where they were loaded from (named in messages and specs)
        # Given, or the filter's: calibrated per block length (resolved in `check`), else its default.
        self._threshold_given = threshold is not None
        self.threshold = float(threshold if threshold is not None else filter_module.config.threshold)
        # The EoT predictor's own threshold (set on validation by train-filter) unless one is given.
        self.eot_threshold = float(eot_threshold if eot_threshold is not None
                                   else eot_module.config.threshold if eot_module is not None else 0.5)
        self.fallback = fallback or VanillaPolicy()
        # Optional confidence floor under the filter's accepts: a filter trained on traces with almost no
        # wrong predictions learns to accept everything; the floor keeps the model's own doubt a veto.
        self.floor = float(floor) if floor is not None else None
        self._gen_length: int | None = None  # the region's length (set by check): `position` features divide by it
        self._eot_threshold_given = eot_threshold is not None
        self._needs_logits()
        self._prev = self._stable = None
        self._eot_prob: torch.Tensor | None = None
        self._eot_default = False  # loaded because the plan has +eotp and named none: dropped on another family
        self._filter_default = False  # the shipped filter, loaded because no path was named
        self._end_ids = torch.tensor([], dtype=torch.long)

    @classmethod
    def from_pretrained(cls, path=None, threshold: float | None = None, fallback: Policy | str | None = None,
                        eot_path=None, model_type: str | None = None, block_length: int | None = None,
                        floor: float | None = None, eot_threshold: float | None = None):
        """Load a filter (and optionally an EoT predictor); refuse one trained for another model or block."""
        from learn2pd.decoding.plan import make_policy

        path = Path(path or DEFAULT_FILTER)
        filt = load_filter(resolve_filter(path))  # a folder, or ORG/NAME[@REVISION] on the Hub
        check_fits(filt.config, path, model_type, block_length)
        eot = load_filter(resolve_filter(eot_path)) if eot_path else None
        if isinstance(fallback, str):
            fallback = make_policy(fallback)
        return cls(filt, threshold, fallback, eot, eot_threshold=eot_threshold, floor=floor, path=path,
                   eot_path=Path(eot_path) if eot_path else None)

    @classmethod
    def from_spec(cls, params: dict, fallback: Policy | None = None, eotp: bool = False) -> LearnedPolicy:
        """`learned:path=P,threshold=T,eot=E,floor=F,eot_threshold=U`; with `+eotp` and no `eot=`, the shipped
        End-of-Text predictor is loaded when it exists."""
        from learn2pd.decoding.policies.base import PolicySpecError, checked_params

        allowed = {"path", "threshold", "eot", "floor", "eot_threshold"}
        unknown = set(params) - allowed
        if unknown:
            raise PolicySpecError(f"bad parameters for 'learned': {sorted(unknown)}; use "
                                  + ", ".join(f"{k}=" for k in sorted(allowed)))
        params = checked_params(cls, params)
        # eot=none: no End-of-Text predictor even with +eotp (what describe() writes for a policy built without one)
        no_eot = str(params.get("eot", "")).lower() == "none"
        eot_path = None if no_eot else params.get("eot") or (DEFAULT_EOT if eotp and DEFAULT_EOT.is_dir() else None)
        policy = cls.from_pretrained(params.get("path"), params.get("threshold"), fallback, eot_path=eot_path,
                                     floor=params.get("floor"), eot_threshold=params.get("eot_threshold"))
        policy._eot_default = not params.get("eot") and not no_eot
        policy._filter_default = not params.get("path")
        return policy

    def describe(self) -> str:
        parts = [f"path={self.path}", f"threshold={self.threshold}"]
        if self.eot is not None:
            parts += [f"eot={self.eot_path}", f"eot_threshold={self.eot_threshold}"]
        else:  # parsed back with +eotp, a spec without eot= would load the shipped predictor
            parts.append("eot=none")
        if self.floor is not None:
            parts.append(f"floor={self.floor}")
        return f"learned:{','.join(parts)}+{self.fallback.describe()}"

    def check(self, cfg, spec) -> None:
        from learn2pd.filters.calibrate import threshold_for

        self._use_shipped(spec.family)
        check_fits(self.filter.config, self.path or "(filter)", spec.family, cfg.block_length)
        if not self._threshold_given:
            self.threshold = threshold_for(self.filter.config.thresholds, cfg.block_length,
                                           self.filter.config.threshold)
        if self.eot is not None and self._eot_default and not _same_family(self.eot.config, spec.family):
            self.eot = self.eot_path = None  # the shipped predictor is for the tiny LLaDA: cut on confidence
        if self.eot is not None:  # the End-of-Text predictor reads the same window: the same rule
            check_fits(self.eot.config, self.eot_path or "(End-of-Text predictor)", spec.family, cfg.block_length)
        self.fallback.check(cfg, spec)
        self._end_ids = torch.tensor(spec.end_ids)
        self._gen_length = cfg.gen_length

    def _needs_logits(self) -> None:
        feats = set(self.filter.config.features) | (set(self.eot.config.features) if self.eot is not None else set())
        self.needs_logits = bool(feats & LOGIT_FEATURES)

    def _use_shipped(self, family: str) -> None:
        """With no path named, the shipped filter and predictor are the decoded model family's own (the tiny
        Dream's for a Dream model), where that family ships them."""
        if self._filter_default and not _same_family(self.filter.config, family) \
                and shipped(family, "filter").is_dir():
            self.path = shipped(family, "filter")
            self.filter = load_filter(self.path).eval()
        if self.eot is not None and self._eot_default and not _same_family(self.eot.config, family) \
                and shipped(family, "eot").is_dir():
            self.eot_path = shipped(family, "eot")
            self.eot = load_filter(self.eot_path).eval()
            if not self._eot_threshold_given:
                self.eot_threshold = float(self.eot.config.threshold)
        self._needs_logits()

    def reset(self, batch: int, width: int, device) -> None:
        self._prev = torch.full((batch, width), -1, dtype=torch.long, device=device)
        self._stable = torch.zeros((batch, width), dtype=torch.long, device=device)
        self.fallback.reset(batch, width, device)

    # -- per step -------------------------------------------------------------------------------
    def _window(self, module, state):
        """The block as the module reads it: its trained width, or for a filter that serves any block
        length the widest block of this step (AdaBlock's blocks vary)."""
        width = module.config.block_length
        if serves_any_block(module.config):
            width = max(1, int(state.block.sum(-1).max()))
        return state.block_window(width)

    def _features(self, names, state, win, stable):
        # gen_length is the region's, not the live width (an EoTP cut shortens that), as in the traces
        kw = dict(confidence=win.take(state.confidence).float(), masked=win.take(state.masked),
                  stable=win.take(stable), length=win.size, block_start=win.start,
                  gen_length=self._gen_length or state.confidence.shape[1],
                  is_end=torch.isin(win.take(state.tokens), self._end_ids.to(win.idx.device)))
        if LOGIT_FEATURES & set(names):
            kw.update(logit_features(state.logits.at(win.idx)))
        return block_features(names, **kw)

    @torch.no_grad()
    def select(self, state):
        width = state.confidence.shape[1]
        stable = self._update_stable(state, width)
        win = self._window(self.filter, state)
        self._to(win.idx.device)
        prob = torch.sigmoid(self.filter(self._features(self.filter.config.features, state, win, stable)))
        accept_blk = (prob > self.threshold) & win.valid
        if self.floor is not None:
            accept_blk &= win.take(state.confidence) >= self.floor
        accept = win.scatter(accept_blk, width) & state.candidates
        if self.eot is not None:
            ewin = self._window(self.eot, state)
            eprob = torch.sigmoid(self.eot(self._features(self.eot.config.features, state, ewin, stable)))
            self._eot_prob = ewin.scatter(eprob * ewin.valid, width)
        if isinstance(self.fallback, LocalLeapPolicy):  # the filter's accepts become anchors
            return accept | self.fallback.select(state, extra_anchors=accept)
        return accept | self.fallback.select(state)

    def _to(self, device) -> None:
        """Run the filters where the model runs. They stay float32: a few thousand parameters cost nothing,
        and bf16 would round probabilities near the 0.96 threshold by ~0.004."""
        if next(self.filter.parameters()).device != device:
            self.filter.to(device)
            if self.eot is not None:
                self.eot.to(device)

    def _update_stable(self, state, width):
        rows = state.rows
        if self._prev is None or self._prev.shape[1] < width or int(rows.max()) >= self._prev.shape[0]:
            self.reset(int(rows.max()) + 1, width, state.tokens.device)
        prev, stable = self._prev[rows, :width], self._stable[rows, :width]
        stable = stable_update(prev, stable, state.tokens, (state.step_in_block > 0)[:, None])
        self._prev[rows, :width], self._stable[rows, :width] = state.tokens, stable
        return stable

    def end_of_text_position(self, state, is_end):
        """The EoT predictor's first confident end in the block, else the most confident end token."""
        fallback = super().end_of_text_position(state, is_end)
        if self.eot is None:
            return fallback
        sure = is_end & (self._eot_prob > self.eot_threshold)
        return torch.where(sure.any(-1), sure.int().argmax(-1), fallback)


def _same_family(config, model_type) -> bool:
    return not config.model_type or config.model_type.lower() == model_type.lower()


def check_fits(config, path, model_type, block_length) -> None:
    """Refuse a filter (or End-of-Text predictor) config trained for another model family or block length."""
    if model_type and config.model_type and config.model_type.lower() != model_type.lower():
        raise ValueError(f"filter {path} was trained on a {config.model_type!r} model, not {model_type!r}: "
                         "collect traces and train a filter for this model")
    if not block_length or block_length == config.block_length or serves_any_block(config):
        return
    # The filter reads a window of config.block_length positions from the block's start.
    if config.kind == "learn2pd":
        why = "its MLP reads exactly that many positions"
    elif block_length > config.block_length:
        why = "its window would not cover the block"
    elif "pos_in_block" in config.features:
        why = f"its pos_in_block feature measures positions in blocks of {config.block_length}"
    else:  # a shorter block: padding fills the rest of the window, as after an EoTP cut
        return
    raise ValueError(f"filter {path} was trained for blocks of {config.block_length}, decoding uses "
                     f"{block_length} ({why}): pass --block-length {config.block_length} or train a new filter")
