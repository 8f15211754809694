"""A decoding plan: the commit policy, the block scheduler and End-of-Text Prediction, by name.

Spec strings join parts with `+`: `vanilla`, `threshold:tau=0.7+eotp`, `adablock:b0=16` (AdaBlock on
threshold decoding, as published), `localleap+adablock+eotp`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from learn2pd.decoding.policies.base import Policy


@dataclass
class DecodingPlan:
    policy: Policy
    scheduler: object | None = None  # None: fixed blocks of DecodeConfig.block_length
    eotp: bool = False
    # EoTP drops the cut positions from the input (published). False keeps them in as EOS: the same
    # forwards are saved (no block past the end runs) for models that need the padding as context.
    eotp_drop: bool = True
    spec: str | None = None

    def describe(self) -> str:
        if self.spec:
            return self.spec
        parts = [self.policy.describe()]
        if self.scheduler is not None:
            parts.append(self.scheduler.describe())
        if self.eotp:
            parts.append("eotp" if self.eotp_drop else "eotp:drop=0")
        return "+".join(parts)
