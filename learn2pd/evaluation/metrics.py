"""Metrics: AUP (area under parallelism, the d3LLM leaderboard's definition) and percentiles."""

from __future__ import annotations

import math


def aup(points: list[tuple[float, float]], y_max: float | None = None) -> float:
    """Area under the accuracy-parallelism curve.

    points: (tpf, accuracy %) pairs. Sorted by TPF; points more than 5 accuracy points below the
    lowest-TPF point are dropped; each trapezoid's heights are weighted by
    W(y) = min(exp(-3 (1 - y / y_max)), 1), with y_max the best accuracy on the task.
    """
    if not points:
        return 0.0
    pts = sorted(points)
    y1 = pts[0][1]
    kept = [p for p in pts if p[1] >= y1 - 5]
    y_max = y_max if y_max is not None else max(y for _, y in points)

    def weight(y):
        return min(math.exp(-3 * (1 - y / y_max)), 1.0) if y_max > 0 else 0.0

    area = kept[0][0] * kept[0][1]
    for (r0, a0), (r1, a1) in zip(kept, kept[1:]):
        area += 0.5 * (r1 - r0) * (a1 * weight(a1) + a0 * weight(a0))
    return area


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100])."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)
