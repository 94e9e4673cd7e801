"""Why the fast KS path decides exactly as scipy: in the regime where it skips the exact
p-value (both sizes >= FAST_MIN_N, n1·n2 >= FAST_MIN_CELLS, exact path in scipy) Stephens'
asymptotic p-value is within a factor 1.25 of scipy's exact one for every statistic
whose exact p-value is at least 1e-12, so a value more than BAND = 2 away from a threshold
is on the same side of it as the exact value. Checked over the lattice of D values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ray_mlops.monitor import _ks

pytestmark = pytest.mark.timeout(120)
FACTOR = 1.25


def _worst_log_ratio(n1: int, n2: int, points: int) -> float:
    lcm = (n1 // math.gcd(n1, n2)) * n2
    root = math.sqrt(n1 * n2 / (n1 + n2))
    hs = np.unique(np.linspace(0.2 / root * lcm, min(1.0, 8.0 / root) * lcm, points).astype(int))
    worst = 0.0
    for h in hs:
        exact = _ks._exact_p(n1, n2, int(h))
        if math.isnan(exact) or exact < 1e-12:
            continue
        approx = float(_ks.stephens_p(np.array(h / lcm), np.array(float(n1)), np.array(float(n2))))
        worst = max(worst, abs(math.log(approx / exact)))
    return worst


@pytest.mark.parametrize("n1,n2", [(500, 2000), (2000, 500), (1000, 1000), (1000, 1001),
                                   (700, 1500), (5000, 1000)])
def test_asymptotic_p_is_within_the_band_where_the_fast_path_applies(n1: int, n2: int) -> None:
    assert _ks._fast_rows(np.array([n1]), np.array([n2]))[0]
    assert _worst_log_ratio(n1, n2, 40) <= math.log(FACTOR) < math.log(_ks.BAND)


@pytest.mark.slow
@pytest.mark.parametrize("n1,n2", [(500, 10_000), (10_000, 1000), (10_000, 997), (3000, 2999),
                                   (600, 1667), (9999, 500)])
def test_asymptotic_p_is_within_the_band_on_a_wider_grid(n1: int, n2: int) -> None:
    assert _worst_log_ratio(n1, n2, 120) <= math.log(FACTOR)


def test_fast_path_is_off_for_small_or_unbalanced_samples() -> None:
    n1 = np.array([400, 20_000, 900, 10_001, 1000])
    n2 = np.array([10_000, 60, 900, 1000, 1000])
    assert _ks._fast_rows(n1, n2).tolist() == [False, False, False, False, True]


def test_fast_path_decides_like_the_exact_p_value() -> None:
    rng = np.random.default_rng(40)
    ref = rng.normal(size=(6000, 8))
    threshold = 0.05 / 8
    for shift in np.linspace(0.0, 0.2, 9):
        win = rng.normal(shift, 1.0, size=(1000, 8))
        _ks.clear_memo()
        fast = _ks.NumericReference(ref).compare(win, np.full(8, threshold))
        exact = _ks.NumericReference(ref).compare(win)
        assert np.array_equal(fast.p_value <= threshold, exact.p_value <= threshold)
        assert np.allclose(fast.p_value[fast.exact], exact.p_value[fast.exact], rtol=0, atol=1e-12)
        ratio = fast.p_value[~fast.exact] / exact.p_value[~fast.exact]
        assert np.all((ratio >= 1 / FACTOR) & (ratio <= FACTOR))
