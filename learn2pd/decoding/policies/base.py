"""The policy interface: which masked positions of the current block to commit this step."""

from __future__ import annotations

import torch

from learn2pd.decoding.state import StepState


class Policy:
    """A commit rule. `select` returns a [B, G] bool mask; the engine keeps only candidates.

    Subclasses set `name` and may set `needs_logits` (the engine then passes logits in the state).
    A policy must commit at least one candidate per step unless it follows the baseline schedule,
    whose quota can be zero (LLaDA with steps > gen_length).
    """

    name = "policy"
    needs_logits = False

    def select(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        params = ",".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{self.name}:{params}" if params else self.name

    def __repr__(self) -> str:
        return self.describe()
