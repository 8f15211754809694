"""The policy interface: which masked positions of the current block to commit this step.

Every hook the engine or the evaluation consults is declared here with a no-op default, so a policy
overrides only what it changes, and nothing probes for attributes.
"""

from __future__ import annotations

import inspect

import torch

from learn2pd.configfile import Check, ConfigError
from learn2pd.decoding.state import NEG_INF, StepState

UNIT = Check(float, ge=0, le=1)  # a probability or confidence threshold


class PolicySpecError(ValueError):
    """A plan or policy spec string a user can fix (the message says how)."""


class Policy:
    """A commit rule. `select` returns a [B, G] bool mask; the engine keeps only candidates.

    A policy must commit at least one candidate per step unless it follows the baseline schedule,
    whose quota can be zero (LLaDA with steps > gen_length). A policy never modifies the StepState:
    the state is also what traces record, the model's own predictions.
    """

    name = "policy"
    needs_logits = False  # the engine passes [B, G, V] logits in the state
    needs_reference = False  # the engine refuses to decode without reference tokens
    takes_fallback = False  # in a plan, another policy becomes this one's fallback (`learned+localleap`)
    bounds: dict[str, Check] = {}  # type and range of spec parameters (`threshold:tau=1.5` is refused)

    def select(self, state: StepState) -> torch.Tensor:
        raise NotImplementedError

    def commit_tokens(self, state: StepState, commit: torch.Tensor) -> torch.Tensor:
        """The tokens written at committed positions: the predictions, unless the policy overrides them."""
        return state.tokens

    def check(self, cfg, spec) -> None:
        """Refuse a decoding setting or model this policy cannot serve (raise ValueError)."""

    def reset(self, batch: int, width: int, device) -> None:
        """Forget per-row state: a new batch of `batch` rows and `width` generation positions starts."""

    def end_of_text_position(self, state: StepState, is_end: torch.Tensor) -> torch.Tensor:
        """Where EoTP cuts each row ([B] column, -1: no cut), given the candidates predicting an end token."""
        return state.confidence.masked_fill(~is_end, NEG_INF).argmax(-1)

    def params(self) -> dict:
        """The constructor arguments that rebuild this policy (what `describe` prints)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def describe(self) -> str:
        """A spec string that `make_plan` turns back into the same policy."""
        params = ",".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}:{params}" if params else self.name

    @classmethod
    def from_spec(cls, params: dict, fallback: Policy | None = None, eotp: bool = False) -> Policy:
        """Build from parsed `key=value` parameters; values are checked against the constructor's defaults."""
        if fallback is not None:
            raise PolicySpecError(f"{cls.name!r} takes no fallback policy")
        return cls(**typed_params(cls, params))

    def __repr__(self) -> str:
        return self.describe()


def typed_params(cls, params: dict) -> dict:
    """Check names and types of spec parameters against `cls.__init__` (a number where a number goes)."""
    sig = inspect.signature(cls.__init__)
    allowed = [p for p in sig.parameters.values() if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]
    names = {p.name: p for p in allowed}
    out = {}
    for key, value in params.items():
        if key not in names:
            raise PolicySpecError(f"bad parameters for policy {cls.name!r}: unknown {key!r}; "
                                  f"use {', '.join(f'{n}=' for n in names) or 'none'}")
        default = names[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not isinstance(value, (int, float)):
            raise PolicySpecError(f"bad parameters for policy {cls.name!r}: {key} must be a number, got {value!r}")
        out[key] = value
    return checked_params(cls, out)


def checked_params(cls, params: dict) -> dict:
    """`params` with each value checked against `cls.bounds` (a policy's or a scheduler's)."""
    try:
        return {k: cls.bounds[k](v, k) if k in cls.bounds else v for k, v in params.items()}
    except ConfigError as err:
        raise PolicySpecError(f"bad parameters for {cls.name!r}: {err}") from None
