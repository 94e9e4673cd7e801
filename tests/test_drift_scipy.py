"""Agreement with scipy: KS (exact and asymptotic, ties, tiny and large samples),
chi-squared / Fisher on the same tables, Wasserstein, Jensen–Shannon, BH."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial import distance

from ray_mlops.monitor import _ks, _multitest
from ray_mlops.monitor._categorical import (chi2_table, jensen_shannon, jensen_shannon_many,
                                             table_test, table_tests)
from ray_mlops.monitor._ks import NumericReference
from ray_mlops.monitor.drift import DriftDetector

pytestmark = pytest.mark.timeout(60)


def _check_ks(ref: np.ndarray, win: np.ndarray) -> None:
    """Every column: statistic and p-value equal scipy's ks_2samp (default method)."""
    res = NumericReference(ref).compare(win)
    for f in range(ref.shape[1]):
        y = ref[:, f][~np.isnan(ref[:, f])]
        x = win[:, f][~np.isnan(win[:, f])]
        expected = stats.ks_2samp(y, x)
        assert res.statistic[f] == pytest.approx(expected.statistic, abs=1e-12)
        assert abs(res.p_value[f] - expected.pvalue) <= 1e-9
        assert res.wasserstein[f] == pytest.approx(stats.wasserstein_distance(y, x),
                                                   rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("n1,n2", [(1, 1), (1, 7), (5, 1), (13, 29), (100, 100),
                                   (997, 40), (3000, 1000), (10_000, 1000)])
def test_ks_exact_path_matches_scipy(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1 * 7 + n2)
    ref = rng.normal(size=(n1, 3))
    win = rng.normal(0.1, 1.2, size=(n2, 3))
    _check_ks(ref, win)


@pytest.mark.parametrize("n1,n2", [(12_000, 50), (10_001, 3000), (20_000, 1)])
def test_ks_asymptotic_path_matches_scipy(n1: int, n2: int) -> None:
    rng = np.random.default_rng(n2)
    _check_ks(rng.normal(size=(n1, 2)), rng.normal(0.05, 1, size=(n2, 2)))


def test_ks_ties_and_missing_match_scipy() -> None:
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, size=(500, 4)).astype(float)
    win = rng.integers(0, 5, size=(80, 4)).astype(float)
    ref[rng.random(ref.shape) < 0.1] = np.nan
    win[rng.random(win.shape) < 0.2] = np.nan
    _check_ks(ref, win)


def test_ks_strong_shift_tiny_p_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    _check_ks(rng.normal(size=(2000, 2)), rng.normal(2.0, 1, size=(300, 2)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=40),
       st.lists(st.integers(-3, 3), min_size=1, max_size=40),
       st.floats(0.01, 10))
def test_ks_property_any_small_samples_with_ties(a: list[int], b: list[int], scale: float) -> None:
    ref = np.array(a, dtype=float)[:, None] * scale
    win = np.array(b, dtype=float)[:, None] * scale
    _check_ks(ref, win)


def test_detector_numeric_p_values_equal_ks_2samp() -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame(rng.normal(size=(4000, 5)), columns=list("abcde"))
    win = pd.DataFrame(rng.normal(0.05, 1, size=(700, 5)), columns=list("abcde"))
    report = DriftDetector(ref, exact_p_values=True).test(win)
    for name in ref.columns:
        expected = stats.ks_2samp(ref[name], win[name]).pvalue
        assert abs(report.features[name].p_value - expected) <= 1e-9
        assert report.features[name].test == "ks" and report.features[name].exact


def test_fast_p_values_are_exact_or_far_from_the_threshold() -> None:
    """Large samples: the exact p-value only near the threshold, the same decisions."""
    rng = np.random.default_rng(15)
    cols = [f"x{i}" for i in range(12)]
    ref = pd.DataFrame(rng.normal(size=(4000, 12)), columns=cols)
    exact_det, fast_det = DriftDetector(ref, exact_p_values=True), DriftDetector(ref)
    approximate = 0
    for shift in (0.0, 0.05, 0.1, 0.15, 0.3):
        win = pd.DataFrame(rng.normal(size=(700, 12)), columns=cols)
        win["x0"] += shift
        _ks.clear_memo()  # else the fast detector finds the exact p-values memoised
        fast, exact = fast_det.test(win), exact_det.test(win)
        assert fast.drift == exact.drift and fast.drifted_features == exact.drifted_features
        for name in cols:
            f, e = fast.features[name], exact.features[name]
            expected = stats.ks_2samp(ref[name], win[name]).pvalue
            assert abs(e.p_value - expected) <= 1e-9
            if f.exact:
                assert abs(f.p_value - expected) <= 1e-9
            else:
                approximate += 1
                assert 1 / 1.25 <= f.p_value / expected <= 1.25
        mv_fast, mv_exact = fast.multivariate, exact.multivariate
        assert mv_fast.drift == mv_exact.drift
    assert approximate > 0


def test_chi2_equals_chi2_contingency() -> None:
    rng = np.random.default_rng(6)
    for k in range(2, 9):
        table = rng.integers(5, 300, size=(2, k))
        stat, p = chi2_table(table)
        expected = stats.chi2_contingency(table)
        assert stat == pytest.approx(expected.statistic, rel=1e-12)
        assert abs(p - expected.pvalue) <= 1e-12


def test_detector_categorical_p_value_equals_scipy_on_table_with_unseen_level() -> None:
    rng = np.random.default_rng(7)
    ref = pd.DataFrame({"c": rng.choice(["a", "b", "c"], 3000, p=[0.5, 0.3, 0.2])})
    win_values = np.concatenate([rng.choice(["a", "b", "c"], 480, p=[0.5, 0.3, 0.2]),
                                 np.array(["new"] * 20)])
    report = DriftDetector(ref).test(pd.DataFrame({"c": win_values}))
    ref_counts = ref["c"].value_counts()
    win_counts = pd.Series(win_values).value_counts()
    table = pd.concat([ref_counts, win_counts], axis=1).fillna(0).to_numpy().T
    feature = report.features["c"]
    assert feature.test == "chi2"
    assert abs(feature.p_value - stats.chi2_contingency(table).pvalue) <= 1e-9
    assert feature.drift  # 4 % of an unseen level is drift
    assert feature.effect_metric == "jensen_shannon"
    js = distance.jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2)
    assert feature.effect_size == pytest.approx(js, rel=1e-9)


def test_pooled_table_is_tested_like_scipy() -> None:
    ref = np.array([400, 300, 200, 50, 3, 2])
    win = np.array([40, 28, 21, 6, 1, 0])
    res = table_test(ref, win)
    assert res.table.sum() == ref.sum() + win.sum()
    expected = stats.chi2_contingency(res.table)
    assert res.test == "chi2" and abs(res.p_value - expected.pvalue) <= 1e-12
    expected_counts = stats.contingency.expected_freq(res.table)
    assert expected_counts.min() >= 1 and (expected_counts < 5).mean() <= 0.2


def test_tables_tested_together_equal_one_by_one() -> None:
    """The batched chi-squared / Jensen–Shannon path (a detector's categorical features)
    gives the single-table results: same test (chi2, pooled, Fisher, one level), same table."""
    rng = np.random.default_rng(12)
    pairs = []
    for _ in range(300):
        p = rng.dirichlet(np.ones(rng.integers(1, 8)) * rng.choice([0.3, 1.0, 5.0]))
        ref, win = rng.multinomial(rng.integers(1, 3000), p), rng.multinomial(rng.integers(1, 300), p)
        if rng.random() < 0.2:  # a level unseen in the reference
            ref, win = np.append(ref, 0), np.append(win, rng.integers(1, 20))
        if ref.sum() and win.sum():
            pairs.append((ref, win))
    for (ref, win), together, js in zip(pairs, table_tests(pairs), jensen_shannon_many(pairs)):
        alone = table_test(ref, win)
        assert together.test == alone.test and np.array_equal(together.table, alone.table)
        assert together.p_value == pytest.approx(alone.p_value, rel=1e-12, abs=1e-15)
        assert js == pytest.approx(jensen_shannon(ref, win), rel=1e-12, abs=1e-15)
    assert {t.test for t in table_tests(pairs)} == {"chi2", "chi2 (one level)", "fisher"}


def test_small_two_by_two_falls_back_to_fisher() -> None:
    res = table_test(np.array([900, 100]), np.array([2, 3]))
    assert res.test == "fisher"
    assert res.p_value == pytest.approx(stats.fisher_exact([[900, 100], [2, 3]]).pvalue)


def test_missing_share_test_equals_scipy() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=2000)
    x[:100] = np.nan
    w = rng.normal(size=500)
    w[:60] = np.nan
    feature = DriftDetector(pd.DataFrame({"x": x})).test(pd.DataFrame({"x": w})).features["x"]
    expected = stats.chi2_contingency([[1900, 100], [440, 60]]).pvalue
    assert abs(feature.missing_p_value - expected) <= 1e-12
    assert feature.missing_share_window == pytest.approx(0.12)
    assert feature.drift


def test_bh_adjustment_equals_scipy() -> None:
    p = np.random.default_rng(9).random(30) ** 3
    assert np.allclose(_multitest.adjust(p, "bh"), stats.false_discovery_control(p))
    assert np.allclose(_multitest.adjust(p, "bonferroni"), np.minimum(1, p * 30))


def test_fisher_combination_equals_scipy() -> None:
    p = np.random.default_rng(10).random(12)
    assert _multitest.combine(p, "fisher") == pytest.approx(
        stats.combine_pvalues(p, method="fisher").pvalue, rel=1e-12)
