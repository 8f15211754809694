"""Decoding policies and their names.

A policy spec is `name[:key=value,...]`, e.g. `vanilla`, `threshold:tau=0.7`, `factor:factor=1.0`.
"""

from __future__ import annotations

from learn2pd.decoding.plan import DecodingPlan
from learn2pd.decoding.policies.base import Policy
from learn2pd.decoding.policies.factor import FactorPolicy
from learn2pd.decoding.policies.localleap import LocalLeapPolicy
from learn2pd.decoding.policies.oracle import OraclePolicy
from learn2pd.decoding.policies.threshold import ThresholdPolicy
from learn2pd.decoding.policies.vanilla import VanillaPolicy
from learn2pd.decoding.schedulers import AdaBlockScheduler

POLICIES: dict[str, type[Policy]] = {
    "vanilla": VanillaPolicy,
    "threshold": ThresholdPolicy,
    "factor": FactorPolicy,
    "localleap": LocalLeapPolicy,
    "oracle": OraclePolicy,
}
SCHEDULERS = {"adablock": AdaBlockScheduler}
FLAGS = ("eotp",)


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
        raise PolicySpecError(f"unknown policy {name!r}: choose from {', '.join([*POLICIES, *SCHEDULERS])}"
                              " (add +eotp for End-of-Text Prediction)")
    try:
        return POLICIES[name](**params)
    except TypeError as err:
        raise PolicySpecError(f"bad parameters for policy {name!r} in {spec!r}: {err}") from None


def make_plan(spec: str | Policy | DecodingPlan) -> DecodingPlan:
    """Parse `policy[:k=v]` joined by `+` with an optional scheduler (`adablock[:b0=..]`) and `eotp`."""
    if isinstance(spec, DecodingPlan):
        return spec
    if isinstance(spec, Policy):
        return DecodingPlan(spec)
    policy, scheduler, eotp, eotp_drop, learned = None, None, False, True, None
    for part in spec.split("+"):
        name, params = parse_policy(part)
        if name == "eotp":
            unknown = set(params) - {"drop"}
            if unknown:
                raise PolicySpecError(f"bad parameters for 'eotp' in {spec!r}: {sorted(unknown)}; use eotp or "
                                      "eotp:drop=0")
            eotp, eotp_drop = True, bool(params.get("drop", 1))
        elif name == "learned":
            learned = params
        elif name in SCHEDULERS:
            try:
                scheduler = SCHEDULERS[name](**params)
            except TypeError as err:
                raise PolicySpecError(f"bad parameters for {name!r} in {spec!r}: {err}") from None
        elif policy is None:
            policy = make_policy(part)
        else:
            raise PolicySpecError(f"{spec!r} names two commit policies; combine one policy with adablock and/or eotp")
    if learned is not None:
        # `learned+localleap`: the other policy is the filter's fallback (default vanilla, as published).
        from learn2pd.decoding.policies.learned import DEFAULT_EOT, LearnedPolicy

        unknown = set(learned) - {"path", "threshold", "eot", "floor"}
        if unknown:
            raise PolicySpecError(f"bad parameters for 'learned' in {spec!r}: {sorted(unknown)}; "
                                  "use path=, threshold=, eot=, floor=")
        eot_path = learned.get("eot") or (DEFAULT_EOT if eotp and DEFAULT_EOT.is_dir() else None)
        policy = LearnedPolicy.from_pretrained(learned.get("path"), learned.get("threshold"), policy,
                                               eot_path=eot_path, floor=learned.get("floor"))
    if policy is None:
        # AdaBlock alone is AdaBlock on threshold decoding (tau 0.9), as published.
        policy = ThresholdPolicy(0.9)
    return DecodingPlan(policy, scheduler, eotp, eotp_drop=eotp_drop, spec=spec.strip())


__all__ = ["DecodingPlan", "make_plan", "POLICIES", "Policy", "PolicySpecError", "make_policy", "parse_policy",
           "VanillaPolicy", "ThresholdPolicy", "FactorPolicy",
           "LocalLeapPolicy", "OraclePolicy", "AdaBlockScheduler"]
