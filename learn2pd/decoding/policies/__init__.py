"""Decoding policies and their names.

A policy spec is `name[:key=value,...]`, e.g. `vanilla`, `threshold:tau=0.7`, `factor:factor=1.0`.
"""

from __future__ import annotations

from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.policies.factor import FactorPolicy
from learn2pd.decoding.policies.threshold import ThresholdPolicy
from learn2pd.decoding.policies.vanilla import VanillaPolicy

POLICIES: dict[str, type[Policy]] = {
    "vanilla": VanillaPolicy,
    "threshold": ThresholdPolicy,
    "factor": FactorPolicy,
}


class PolicySpecError(ValueError):
    pass


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_policy(spec: str) -> tuple[str, dict]:
    """`'threshold:tau=0.7'` -> `('threshold', {'tau': 0.7})`."""
    name, _, args = spec.strip().partition(":")
    params = {}
    for item in filter(None, args.split(",")):
        key, eq, val = item.partition("=")
        if not eq:
            raise PolicySpecError(f"bad policy parameter {item!r} in {spec!r}: write key=value, e.g. threshold:tau=0.7")
        params[key.strip()] = _value(val.strip())
    return name, params


def make_policy(spec: str | Policy) -> Policy:
    if isinstance(spec, Policy):
        return spec
    name, params = parse_policy(spec)
    if name not in POLICIES:
        raise PolicySpecError(f"unknown policy {name!r}: choose from {', '.join(POLICIES)}")
    try:
        return POLICIES[name](**params)
    except TypeError as err:
        raise PolicySpecError(f"bad parameters for policy {name!r} in {spec!r}: {err}") from None


__all__ = ["POLICIES", "Policy", "PolicySpecError", "make_policy", "parse_policy",
           "VanillaPolicy", "ThresholdPolicy", "FactorPolicy"]
