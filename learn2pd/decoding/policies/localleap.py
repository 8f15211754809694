"""LocalLeap (Kong et al. 2025): confident anchors license their neighbours at a relaxed threshold.

Each step: anchors = candidates with confidence >= kappa; neighbourhood = positions within `radius`
of an anchor; commit the anchors, every candidate in the neighbourhood with confidence >= tau, and
always the most confident candidate. Positions accepted through tau do not become anchors in the
same step (no chaining). With no anchor it is threshold decoding at kappa.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learn2pd.configfile import Check
from learn2pd.decoding.policies.base import UNIT, Policy
from learn2pd.decoding.state import top1_mask


def neighbourhood(anchors: torch.Tensor, radius: int) -> torch.Tensor:
    """Positions within `radius` of any anchor ([B, G] bool -> [B, G] bool), one max-pool."""
    if radius <= 0:
        return anchors
    pooled = F.max_pool1d(anchors[:, None].float(), kernel_size=2 * radius + 1, stride=1, padding=radius)
    return pooled[:, 0] > 0


class LocalLeapPolicy(Policy):
    name = "localleap"
    bounds = {"kappa": UNIT, "tau": UNIT, "radius": Check(int, ge=0)}

    def __init__(self, kappa: float = 0.9, tau: float = 0.75, radius: int = 4):
        if not 0 <= tau <= kappa <= 1:
            raise ValueError(f"localleap needs 0 <= tau <= kappa <= 1, got tau={tau}, kappa={kappa}")
        self.kappa, self.tau, self.radius = float(kappa), float(tau), int(radius)

    def select(self, state, extra_anchors: torch.Tensor | None = None):
        """extra_anchors: positions another rule already accepts (the learned filter's), anchoring too."""
        conf = state.candidate_confidence()
        anchors = conf >= self.kappa
        if extra_anchors is not None:
            anchors = anchors | extra_anchors
        near = neighbourhood(anchors, self.radius)
        return top1_mask(conf) | anchors | (near & (conf >= self.tau))
