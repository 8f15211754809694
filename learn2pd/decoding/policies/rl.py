"""An unmasking policy trained by reinforcement learning (`train-policy`): a small transformer reads the
block's confidences and decides which masked positions to commit.

Evaluation is deterministic: candidates whose commit probability is above the policy's threshold (set on
validation problems by `train-policy`) are committed. In training the same network samples a Bernoulli
commit per candidate and the steps are recorded for the GRPO update. Either way, a step that would commit
nothing commits the most probable candidate, so every forward makes progress.

A spec of its own (`rl:path=DIR`) rather than `learned:path=DIR`: a learned filter vetoes on top of a
fallback policy and reads trace features of a fixed window, while this policy is the whole commit rule
(no fallback) and reads the forward budget the row has used, which only a live decode has.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from learn2pd.decoding.policies.base import Policy, PolicySpecError
from learn2pd.decoding.state import BlockWindow, top1_mask
from learn2pd.rl.net import load_policy_net, policy_features

DEFAULT_POLICY = Path(__file__).resolve().parents[3] / "checkpoints" / "tiny-llada-rl-policy"


class RLPolicy(Policy):
    name = "rl"

    def __init__(self, net, threshold: float | None = None, path=None):
        self.net, self.path = net.eval(), path
        self.threshold = float(threshold if threshold is not None else net.config.threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"rl threshold must be in [0, 1], got {self.threshold}")
        self._nfe: torch.Tensor | None = None
        self._gen_length = 1
        self._generator: torch.Generator | None = None
        self._steps: list[dict] | None = None

    @classmethod
    def from_pretrained(cls, path=None, threshold: float | None = None) -> RLPolicy:
        path = Path(path or DEFAULT_POLICY)
        return cls(load_policy_net(path), threshold, path)

    @classmethod
    def from_spec(cls, params: dict, fallback: Policy | None = None, eotp: bool = False) -> RLPolicy:
        """`rl` (the shipped policy) or `rl:path=DIR,threshold=T`."""
        if fallback is not None:
            raise PolicySpecError("'rl' takes no fallback policy: it always commits its most probable candidate")
        unknown = set(params) - {"path", "threshold"}
        if unknown:
            raise PolicySpecError(f"bad parameters for 'rl': {sorted(unknown)}; use path=, threshold=")
        if "threshold" in params and not isinstance(params["threshold"], (int, float)):
            raise PolicySpecError(f"bad parameters for 'rl': threshold must be a number, got {params['threshold']!r}")
        return cls.from_pretrained(params.get("path"), params.get("threshold"))

    def describe(self) -> str:
        return f"rl:path={self.path},threshold={self.threshold}" if self.path else f"rl:threshold={self.threshold}"

    def check(self, cfg, spec) -> None:
        trained = self.net.config.model_type
        if trained and trained.lower() != spec.family.lower():
            raise ValueError(f"unmasking policy {self.path or '(policy)'} was trained on a {trained!r} model, not "
                             f"{spec.family!r}: train one for this model with `train-policy`")

    def reset(self, batch: int, width: int, device) -> None:
        self._nfe = torch.zeros(batch, dtype=torch.long, device=device)
        self._gen_length = width

    @contextlib.contextmanager
    def sampling(self, generator: torch.Generator):
        """Training: sample Bernoulli commits with `generator`; yields the list each step is appended to
        (rows, features, valid, candidates, the sampled action: what the GRPO update needs)."""
        self._generator, self._steps = generator, []
        try:
            yield self._steps
        finally:
            self._generator, self._steps = None, None

    @torch.no_grad()
    def select(self, state):
        width = state.confidence.shape[1]
        if self._nfe is None or int(state.rows.max()) >= self._nfe.shape[0]:
            self.reset(int(state.rows.max()) + 1, width, state.rows.device)
        self._nfe[state.rows] += 1  # one select per forward a row takes part in: its forwards so far
        win = BlockWindow.of(state.block, max(int(state.block.sum(-1).max()), 1))
        cand = win.take(state.candidates) & win.valid
        feats = policy_features(win.take(state.confidence), win.take(state.masked),
                                self._nfe[state.rows] / self._gen_length, win.valid)
        if next(self.net.parameters()).device != feats.device:
            self.net.to(feats.device)
        logits = self.net(feats, win.valid)
        prob = torch.sigmoid(logits.double())
        if self._steps is None:
            act = (prob > self.threshold) & cand
        else:
            draw = torch.rand(prob.shape, dtype=torch.float64, generator=self._generator).to(prob.device)
            act = (draw < prob) & cand
            self._steps.append({"rows": state.rows.cpu(), "start": win.start.cpu(), "features": feats.cpu(),
                                "valid": win.valid.cpu(), "candidates": cand.cpu(), "action": act.cpu()})
        act = at_least_one(act, prob, cand)
        return win.scatter(act, width)


def at_least_one(act: torch.Tensor, prob: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """Rows whose action commits nothing commit their most probable candidate instead. In training this is
    the environment's rule, not the policy's action: the recorded action stays the (empty) sample."""
    best = top1_mask(prob.masked_fill(~cand, float("-inf")))
    return act | (best & ~act.any(-1, keepdim=True))
