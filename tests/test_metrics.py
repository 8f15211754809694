import math

import pytest

from learn2pd.evaluation.metrics import aup, percentile


def test_aup_single_point_is_tpf_times_accuracy():
    assert aup([(1.0, 80.0)]) == pytest.approx(80.0)


def test_aup_by_hand():
    pts = [(1.0, 80.0), (2.0, 78.0), (4.0, 70.0)]  # 70 < 80 - 5: dropped
    w = math.exp(-3 * (1 - 78 / 80))
    assert aup(pts) == pytest.approx(80 + 0.5 * 1.0 * (78 * w + 80))


def test_aup_order_invariant_and_y_max_weighting():
    pts = [(3.0, 79.0), (1.0, 80.0), (2.0, 80.0)]
    assert aup(pts) == pytest.approx(aup(sorted(pts)))
    assert aup(pts, y_max=90.0) < aup(pts)  # a better method on the task lowers everyone's weight


def test_percentile():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([0, 10], 95) == pytest.approx(9.5)
