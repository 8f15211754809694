"""Compare filters on held-out traces at equal recall: the fair way to say one makes fewer mistakes."""

from __future__ import annotations

import math

import torch


def threshold_at_recall(prob: torch.Tensor, labels: torch.Tensor, recall: float) -> float:
    """The highest threshold t whose accepts (prob >= t) recover at least `recall` of the positives."""
    pos = prob[labels.bool()].sort(descending=True).values
    if len(pos) == 0:
        raise ValueError("no positive labels: cannot set a threshold by recall")
    k = min(max(math.ceil(recall * len(pos)), 1), len(pos))
    return float(pos[k - 1])


def false_accept_rate_at_recall(prob: torch.Tensor, labels: torch.Tensor, recall: float) -> tuple[float, float]:
    """(false-accept rate, threshold) where the filter reaches `recall`: the share of wrong predictions
    (label 0) that would be committed, which is what costs accuracy."""
    t = threshold_at_recall(prob, labels, recall)
    neg = prob[~labels.bool()]
    return (float((neg >= t).float().mean()) if len(neg) else 0.0), t


def threshold_at_false_accept_rate(prob: torch.Tensor, labels: torch.Tensor, far: float) -> float:
    """The lowest threshold t whose accepts (prob > t) include at most `far` of the negatives: the most
    recall a false-accept budget allows."""
    neg = prob[~labels.bool()].sort(descending=True).values
    if len(neg) == 0:
        return 0.0
    k = math.floor(far * len(neg))  # negatives allowed above t
    return float(neg[k]) if k < len(neg) else 0.0
