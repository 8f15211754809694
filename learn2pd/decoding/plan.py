"""A decoding plan: the commit policy, the block scheduler and End-of-Text Prediction, and its spec strings.

Spec strings join parts with `+`: `vanilla`, `threshold:tau=0.7+eotp`, `adablock:b0=16` (AdaBlock on
threshold decoding, as published), `localleap+adablock+eotp`, `learned:threshold=0.9+localleap+eotp`
(a policy that takes a fallback gets the plan's other policy). `plan.describe()` is canonical and
`make_plan(plan.describe())` builds the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from learn2pd.decoding.policies.base import Policy, PolicySpecError, checked_params
from learn2pd.decoding.policies.dream import EntropyPolicy, MaskGITPlusPolicy, OriginPolicy, TopkMarginPolicy
from learn2pd.decoding.policies.factor import FactorPolicy
from learn2pd.decoding.policies.learned import LearnedPolicy
from learn2pd.decoding.policies.localleap import LocalLeapPolicy
from learn2pd.decoding.policies.oracle import OraclePolicy
from learn2pd.decoding.policies.rl import RLPolicy
from learn2pd.decoding.policies.threshold import ThresholdPolicy
from learn2pd.decoding.policies.vanilla import VanillaPolicy
from learn2pd.decoding.schedulers import AdaBlockScheduler, FixedBlocks, Scheduler

POLICIES: dict[str, type[Policy]] = {
    "vanilla": VanillaPolicy,
    "threshold": ThresholdPolicy,
    "factor": FactorPolicy,
    "localleap": LocalLeapPolicy,
    "oracle": OraclePolicy,
    "learned": LearnedPolicy,
    "rl": RLPolicy,  # trained by train-policy (GRPO)
    # Dream's diffusion_generate algorithms (any model; Dream's defaults)
    "origin": OriginPolicy,
    "maskgit_plus": MaskGITPlusPolicy,
    "topk_margin": TopkMarginPolicy,
    "entropy": EntropyPolicy,
}
SCHEDULERS: dict[str, type[Scheduler]] = {"adablock": AdaBlockScheduler}
EOTP = "eotp"


@dataclass
class DecodingPlan:
    policy: Policy
    scheduler: Scheduler | None = None  # None: fixed blocks of DecodeConfig.block_length
    eotp: bool = False
    # EoTP drops the cut positions from the input (published). False keeps them in as EOS: the same
    # forwards are saved (no block past the end runs) for models that need the padding as context.
    eotp_drop: bool = True
    spec: str | None = None  # the string it was built from, as the user wrote it

    def describe(self) -> str:
        """The canonical spec: every parameter resolved (a learned filter's path and threshold included)."""
        parts = [self.policy.describe()]
        if self.scheduler is not None:
            parts.append(self.scheduler.describe())
        if self.eotp:
            parts.append(EOTP if self.eotp_drop else f"{EOTP}:drop=0")
        return "+".join(parts)

    @property
    def label(self) -> str:
        """How reports name the plan: the user's spec when there is one (it parses back to this plan)."""
        return self.spec or self.describe()

    def block_scheduler(self) -> Scheduler:
        return self.scheduler or FixedBlocks()


def _value(text: str):
    if text.lower() in ("true", "false"):  # `eotp:drop=false`: a bool, not a (truthy) string
        return text.lower() == "true"
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
    return name.strip(), params


def _choices() -> str:
    return ", ".join([*POLICIES, *SCHEDULERS, EOTP])


def make_policy(spec: str | Policy, fallback: Policy | None = None, eotp: bool = False) -> Policy:
    if isinstance(spec, Policy):
        return spec
    name, params = parse_policy(spec)
    if name not in POLICIES:
        raise PolicySpecError(f"unknown policy {name!r} in {spec!r}: choose from {_choices()}")
    try:
        return POLICIES[name].from_spec(params, fallback=fallback, eotp=eotp)
    except TypeError as err:
        raise PolicySpecError(f"bad parameters for policy {name!r} in {spec!r}: {err}") from None


def make_plan(spec: str | Policy | DecodingPlan) -> DecodingPlan:
    """Parse `policy[:k=v]` joined by `+` with an optional scheduler (`adablock[:b0=..]`) and `eotp`."""
    if isinstance(spec, DecodingPlan):
        return spec
    if isinstance(spec, Policy):
        return DecodingPlan(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise PolicySpecError(f"empty plan {spec!r}: name a policy, e.g. vanilla or threshold:tau=0.9+eotp")
    policies, wrapper, scheduler, eotp, eotp_drop = [], None, None, False, True
    for part in spec.split("+"):
        name, params = parse_policy(part)
        if name == EOTP:
            unknown = set(params) - {"drop"}
            if unknown:
                raise PolicySpecError(f"bad parameters for 'eotp' in {spec!r}: {sorted(unknown)}; use eotp or "
                                      "eotp:drop=0")
            drop = params.get("drop", True)
            if drop not in (0, 1):  # False and True are 0 and 1
                raise PolicySpecError(f"bad parameters for 'eotp' in {spec!r}: drop must be true or false (1 or 0), "
                                      f"got {drop!r}")
            eotp, eotp_drop = True, bool(drop)
        elif name in SCHEDULERS:
            try:
                scheduler = SCHEDULERS[name](**checked_params(SCHEDULERS[name], params))
            except TypeError as err:
                raise PolicySpecError(f"bad parameters for {name!r} in {spec!r}: {err}") from None
        elif name in POLICIES and POLICIES[name].takes_fallback:
            if wrapper is not None:
                raise PolicySpecError(f"{spec!r} names {name!r} twice")
            wrapper = part
        elif name in POLICIES:
            policies.append(part)
        else:
            raise PolicySpecError(f"unknown policy {name!r} in {spec!r}: choose from {_choices()}")
    if len(policies) > 1:
        raise PolicySpecError(f"{spec!r} names two commit policies; combine one policy with adablock and/or eotp")
    inner = make_policy(policies[0]) if policies else None
    if wrapper is not None and inner is not None and inner.needs_reference:
        raise PolicySpecError(f"{spec!r}: {inner.name!r} is a bound, not a fallback (it commits against the "
                              f"reference decode); compare the two as separate plans: "
                              f"--policies {inner.name},{parse_policy(wrapper)[0]}")
    if wrapper is not None:
        policy = make_policy(wrapper, fallback=inner, eotp=eotp)
    else:
        # AdaBlock alone is AdaBlock on threshold decoding (tau 0.9), as published.
        policy = inner or ThresholdPolicy(0.9)
    return DecodingPlan(policy, scheduler, eotp, eotp_drop=eotp_drop, spec=spec.strip())


def check_plans(plans: list[DecodingPlan], config, spec, references: bool = True) -> None:
    """Each plan against a model's spec and the decode settings, as decoding will check it. Front ends call it
    with the spec from config.json alone (`models.loading.model_spec`), so a filter of another model family or
    block length fails before the weights load; `references=False` where no reference decode exists."""
    for plan in plans:
        if not references and plan.policy.needs_reference:
            raise PolicySpecError(f"plan {plan.label!r} commits against a reference (the oracle is a bound, not a "
                                  "decoder): compare it with `learn2pd evaluate --policies vanilla,oracle`")
        plan.policy.check(config, spec)


__all__ = ["DecodingPlan", "POLICIES", "SCHEDULERS", "PolicySpecError", "check_plans", "make_plan", "make_policy",
           "parse_policy"]
