"""The paired gate's statistics (pure, fast): references, calibration under the null, power.

References: the exact McNemar p against ``scipy.stats.binomtest``; Tango's restricted MLE
against a numerical maximisation of the constrained likelihood; DeLong's AUC and variance
against a brute-force O(n²) computation of the placement values; the bootstrap's metrics
against ``ray_mlops.train.metrics``. Calibration and power by seeded simulation: the rate
is compared with α plus a binomial allowance that the null rate could exceed only with
probability 1e-4, and the seed is fixed, so the outcome is the same on every run.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.metrics import roc_auc_score

from ray_mlops.gate_stats import (
    PairedTest,
    delong_paired,
    mcnemar_exact_p,
    metric_value,
    weighted_metric,
    paired_test,
    tango_interval,
    tango_z,
)
from ray_mlops.gate_stats import _restricted_q
from ray_mlops.train.metrics import classification_metrics, regression_metrics

ALPHA = 0.05


def allowance(simulations: int, alpha: float = ALPHA) -> float:
    """The rejection rate a level-α test exceeds with probability < 1e-4 over ``simulations``."""
    return float(stats.binom.ppf(1 - 1e-4, simulations, alpha)) / simulations


# -- references -------------------------------------------------------------------------------
@pytest.mark.parametrize("wins, losses", [(0, 0), (0, 5), (3, 3), (8, 2), (17, 4), (40, 25), (120, 90)])
def test_mcnemar_exact_equals_scipy_binomtest(wins, losses):
    expected = stats.binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    assert mcnemar_exact_p(wins, losses) == pytest.approx(expected, rel=1e-12)


def _outcomes(wins, losses, ties, seed=0):
    """Labels and one-hot probabilities where the candidate wins/loses/ties on those rows."""
    rng = np.random.default_rng(seed)
    n = wins + losses + ties
    y = rng.integers(0, 2, n)
    correct_c = np.r_[np.ones(wins), np.zeros(losses), rng.integers(0, 2, ties)].astype(bool)
    correct_p = np.r_[np.zeros(wins), np.ones(losses), correct_c[wins + losses:]].astype(bool)
    prod = np.where(correct_p, y, 1 - y)
    cand = np.where(correct_c, y, 1 - y)
    return y, np.eye(2)[prod] * 0.6 + 0.2, np.eye(2)[cand] * 0.6 + 0.2


def test_accuracy_superior_uses_the_exact_mcnemar_test_on_discordant_pairs():
    y, prod, cand = _outcomes(30, 14, 156)
    t = paired_test(y, prod, cand, metric="accuracy", margin=0.02, alpha=ALPHA, require="superior")
    assert t.test == "mcnemar_exact" and t.rows == 200
    assert t.estimate == pytest.approx(16 / 200)
    assert t.p_value == pytest.approx(stats.binomtest(30, 44, 0.5, alternative="greater").pvalue)
    assert t.passed and t.low > 0 and t.low < t.estimate < t.high
    assert t.candidate_score - t.production_score == pytest.approx(t.estimate)


@pytest.mark.parametrize("wins, losses, n, delta", [(30, 14, 200, -0.05), (5, 9, 100, 0.02), (0, 0, 50, -0.1),
                                                     (12, 40, 300, -0.2), (3, 1, 20, 0.3)])
def test_tango_restricted_mle_maximises_the_constrained_likelihood(wins, losses, n, delta):
    ties = n - wins - losses

    def negative_loglik(q):
        return -(wins * np.log(q + delta) + losses * np.log(q) + ties * np.log(1 - 2 * q - delta))

    lo, hi = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12
    best = optimize.minimize_scalar(negative_loglik, bounds=(lo, hi), method="bounded",
                                    options={"xatol": 1e-12})
    assert _restricted_q(wins, losses, n, delta) == pytest.approx(best.x, abs=1e-6)


def test_tango_at_zero_is_the_asymptotic_mcnemar_statistic_and_its_interval_inverts_it():
    assert tango_z(30, 14, 200, 0.0) == pytest.approx((30 - 14) / math.sqrt(44))
    low, high = tango_interval(30, 14, 200, 0.90)
    z = stats.norm.ppf(0.95)
    assert tango_z(30, 14, 200, low) == pytest.approx(z, abs=1e-6)
    assert tango_z(30, 14, 200, high) == pytest.approx(-z, abs=1e-6)


def test_accuracy_non_inferiority_uses_tango_and_agrees_with_its_interval():
    y, prod, cand = _outcomes(10, 16, 274)
    t = paired_test(y, prod, cand, metric="accuracy", margin=0.05, alpha=ALPHA, require="non_inferior")
    assert t.test == "tango_score" and t.estimate == pytest.approx(-6 / 300)
    assert t.passed == (t.low > -0.05) and t.passed
    strict = paired_test(y, prod, cand, metric="accuracy", margin=0.005, alpha=ALPHA, require="non_inferior")
    assert not strict.passed and strict.low < -0.005


def _brute_force_delong(positive, a, b):
    """DeLong's AUCs and Var(AUC_a − AUC_b) from the O(n²) kernel ψ (½ on ties)."""
    def placements(s):
        pos, neg = s[positive], s[~positive]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = placements(a), placements(b)
    m, n = len(v10_a), len(v01_a)
    var = (np.var(v10_a - v10_b, ddof=1) / m) + (np.var(v01_a - v01_b, ddof=1) / n)
    return auc_a, auc_b, var


def test_delong_equals_the_brute_force_computation_with_ties():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    production = np.round(y * 0.8 + rng.normal(size=300), 1)  # rounding makes ties
    candidate = np.round(y * 1.2 + rng.normal(size=300), 1)
    auc_p, auc_c, delta, se = delong_paired(y == 1, production, candidate)
    ref_c, ref_p, ref_var = _brute_force_delong(y == 1, candidate, production)
    assert (auc_p, auc_c) == pytest.approx((ref_p, ref_c), abs=1e-12)
    assert auc_p == pytest.approx(roc_auc_score(y, production)) and delta == pytest.approx(auc_c - auc_p)
    assert se ** 2 == pytest.approx(ref_var, rel=1e-9)
    t = paired_test(y, production / 10 + 0.5, candidate / 10 + 0.5, metric="roc_auc", margin=0.0,
                    alpha=ALPHA, require="superior")  # monotone rescaling keeps the AUCs
    assert t.test == "delong" and t.estimate == pytest.approx(delta)
    assert t.p_value == pytest.approx(stats.norm.sf(delta / se))
    assert t.low == pytest.approx(delta - stats.norm.ppf(0.95) * se)


def test_bootstrap_metrics_match_the_training_metrics():
    rng = np.random.default_rng(1)
    y3 = rng.integers(0, 3, 200)
    p3 = rng.dirichlet(np.ones(3), 200)
    reference = classification_metrics(y3, p3)
    for metric in ("log_loss", "roc_auc", "accuracy", "macro_f1"):
        assert metric_value(metric, y3, p3, 3) == pytest.approx(reference[metric], rel=1e-9), metric
    y2 = rng.integers(0, 2, 200)
    p2 = np.column_stack([1 - (q := rng.random(200)), q])
    reference = classification_metrics(y2, p2)
    for metric in ("log_loss", "roc_auc", "accuracy", "f1", "macro_f1"):
        assert metric_value(metric, y2, p2, 2) == pytest.approx(reference[metric], rel=1e-9), metric
    yr, vr = rng.normal(size=100), rng.normal(size=100)
    for metric, value in regression_metrics(yr, vr).items():
        assert metric_value(metric, yr, vr, 0) == pytest.approx(value, rel=1e-9), metric


@pytest.mark.parametrize("metric, k", [("accuracy", 3), ("log_loss", 3), ("roc_auc", 3), ("macro_f1", 3),
                                      ("roc_auc", 2), ("f1", 2), ("rmse", 0), ("mae", 0), ("r2", 0)])
def test_a_weighted_replicate_equals_the_metric_on_the_resampled_rows(metric, k):
    rng = np.random.default_rng(5)
    y = rng.integers(0, k, 120) if k else rng.normal(size=120)
    values = np.round(rng.dirichlet(np.ones(k), 120), 1) if k else rng.normal(size=120)  # rounded: ties
    rows = rng.integers(0, 120, 120)
    counts = np.bincount(rows, minlength=120)[None, :].astype(float)
    replicate = weighted_metric(metric, k)(y, values, counts)[0]
    assert replicate == pytest.approx(metric_value(metric, y[rows], values[rows], k), rel=1e-9)


def test_bootstrap_is_seeded_signs_losses_and_covers_multiclass_auc():
    rng = np.random.default_rng(2)
    y = rng.normal(size=150)
    production, candidate = y + rng.normal(scale=1.0, size=150), y + rng.normal(scale=0.5, size=150)
    a = paired_test(y, production, candidate, metric="rmse", margin=0.0, alpha=ALPHA, require="superior", seed=3)
    b = paired_test(y, production, candidate, metric="rmse", margin=0.0, alpha=ALPHA, require="superior", seed=3)
    assert a == b and a.test == "paired_bootstrap" and a.passed
    assert a.estimate == pytest.approx(a.production_score - a.candidate_score) and a.estimate > 0
    y3 = rng.integers(0, 3, 300)
    noisy = rng.dirichlet(np.ones(3), 300)
    sharp = 0.5 * noisy + 0.5 * np.eye(3)[y3]
    t = paired_test(y3, noisy, sharp, metric="roc_auc", margin=0.0, alpha=ALPHA, require="superior",
                    bootstrap_samples=500)
    assert t.test == "paired_bootstrap" and t.passed and t.low > 0


# -- calibration and power by simulation -----------------------------------------------------
def _correctness_rows(rng, n, p_win, p_loss):
    """Labels and probabilities of two classifiers whose paired outcomes have these rates."""
    u = rng.random(n)
    win, loss = u < p_win, (u >= p_win) & (u < p_win + p_loss)
    both = rng.random(n) < 0.75  # concordant rows: both right or both wrong
    correct_c = np.where(win, True, np.where(loss, False, both))
    correct_p = np.where(win, False, np.where(loss, True, both))
    y = rng.integers(0, 2, n)
    return y, np.where(correct_p, y, 1 - y).astype(float), np.where(correct_c, y, 1 - y).astype(float)


def _rate(simulate, simulations, seed):
    rng = np.random.default_rng(seed)
    return float(np.mean([simulate(rng).passed for _ in range(simulations)]))


def test_mcnemar_superior_gate_promotes_a_no_better_candidate_at_most_alpha_and_a_better_one_often():
    def null(rng):
        y, prod, cand = _correctness_rows(rng, 400, 0.08, 0.08)
        return paired_test(y, prod, cand, metric="accuracy", margin=0.0, alpha=ALPHA, require="superior")

    def better(rng):
        y, prod, cand = _correctness_rows(rng, 400, 0.12, 0.04)  # +8 points of accuracy
        return paired_test(y, prod, cand, metric="accuracy", margin=0.0, alpha=ALPHA, require="superior")

    assert _rate(null, 1000, seed=11) <= allowance(1000)
    assert _rate(better, 300, seed=12) >= 0.9


def test_tango_non_inferior_gate_is_calibrated_at_the_margin():
    def at_margin(rng):  # true Δ = −0.03 = −margin: a pass is a type I error
        y, prod, cand = _correctness_rows(rng, 600, 0.05, 0.08)
        return paired_test(y, prod, cand, metric="accuracy", margin=0.03, alpha=ALPHA, require="non_inferior")

    def equal(rng):
        y, prod, cand = _correctness_rows(rng, 1200, 0.06, 0.06)
        return paired_test(y, prod, cand, metric="accuracy", margin=0.03, alpha=ALPHA, require="non_inferior")

    assert _rate(at_margin, 1000, seed=13) <= allowance(1000)
    assert _rate(equal, 300, seed=14) >= 0.8


def _scored_rows(rng, n, signal_p, signal_c):
    """Labels and two correlated scores; equal signals give equal true AUCs."""
    y = rng.integers(0, 2, n)
    shared = rng.normal(size=n)
    prod = signal_p * y + 0.6 * shared + 0.8 * rng.normal(size=n)
    cand = signal_c * y + 0.6 * shared + 0.8 * rng.normal(size=n)
    return y, 1 / (1 + np.exp(-prod)), 1 / (1 + np.exp(-cand))


def test_delong_superior_gate_is_calibrated_and_powerful():
    def null(rng):
        y, prod, cand = _scored_rows(rng, 300, 1.0, 1.0)
        return paired_test(y, prod, cand, metric="roc_auc", margin=0.0, alpha=ALPHA, require="superior")

    def better(rng):
        y, prod, cand = _scored_rows(rng, 300, 1.0, 1.6)
        return paired_test(y, prod, cand, metric="roc_auc", margin=0.0, alpha=ALPHA, require="superior")

    assert _rate(null, 1000, seed=21) <= allowance(1000)
    assert _rate(better, 300, seed=22) >= 0.9


def test_bootstrap_superior_gate_is_calibrated_and_powerful():
    def rows(rng, scale_c):
        y = rng.normal(size=200)
        shared = rng.normal(scale=0.5, size=200)
        return y, y + shared + rng.normal(size=200), y + shared + rng.normal(scale=scale_c, size=200)

    def null(rng):
        y, prod, cand = rows(rng, 1.0)
        return paired_test(y, prod, cand, metric="mae", margin=0.0, alpha=ALPHA, require="superior",
                           seed=int(rng.integers(1 << 30)), bootstrap_samples=200)

    def better(rng):
        y, prod, cand = rows(rng, 0.6)
        return paired_test(y, prod, cand, metric="mae", margin=0.0, alpha=ALPHA, require="superior",
                           seed=int(rng.integers(1 << 30)), bootstrap_samples=200)

    assert _rate(null, 300, seed=31) <= allowance(300)
    assert _rate(better, 100, seed=32) >= 0.9


# -- shape of the result, bad input ---------------------------------------------------------
def test_identical_models_are_non_inferior_but_not_superior():
    y, prod, _ = _outcomes(0, 0, 100)
    superior = paired_test(y, prod, prod, metric="accuracy", margin=0.01, alpha=ALPHA, require="superior")
    assert not superior.passed and superior.p_value == 1.0 and superior.estimate == 0.0
    same = paired_test(y, prod[:, 1], prod[:, 1], metric="roc_auc", margin=0.01, alpha=ALPHA,
                       require="non_inferior")
    assert same.passed and (same.low, same.high) == (0.0, 0.0)


def test_to_json_is_json_safe_and_describe_names_the_figures():
    y, prod, cand = _outcomes(20, 5, 75)
    t = paired_test(y, prod, cand, metric="accuracy", margin=0.0, alpha=ALPHA, require="superior")
    assert isinstance(t, PairedTest)
    data = json.loads(json.dumps(t.to_json()))
    assert {"metric", "test", "estimate", "low", "high", "p_value", "rows", "margin", "alpha", "require",
            "passed"} <= set(data)
    assert "mcnemar_exact" in t.describe() and "100 rows" in t.describe()
    assert PairedTest("accuracy", "x", math.nan, 0, 0, 1, 0, 0, 0.05, "superior", False).to_json()["estimate"] is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(require="better"), "require"),
    (dict(alpha=0.0), "alpha"),
    (dict(margin=-0.1), "margin"),
    (dict(metric="brier"), "metric 'brier'"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    y, prod, cand = _outcomes(3, 2, 10)
    args = dict(metric="log_loss", margin=0.0, alpha=ALPHA, require="superior") | kwargs
    with pytest.raises(ValueError, match=message):
        paired_test(y, prod, cand, **args)


def test_mismatched_inputs_are_refused():
    y, prod, cand = _outcomes(3, 2, 10)
    with pytest.raises(ValueError, match="shape"):
        paired_test(y, prod, cand[:-1], metric="accuracy", margin=0.0, alpha=ALPHA, require="superior")
    with pytest.raises(ValueError, match="14 labels, 15 production"):
        paired_test(y[:-1], prod, cand, metric="accuracy", margin=0.0, alpha=ALPHA, require="superior")
    with pytest.raises(ValueError, match="expected"):
        paired_test(y, prod, cand, metric="accuracy", margin=0.0, alpha=ALPHA, require="superior",
                    classes=[0, 1, 2])
    with pytest.raises(ValueError, match="no rows"):
        paired_test([], np.empty((0, 2)), np.empty((0, 2)), metric="accuracy", margin=0.0, alpha=ALPHA,
                    require="superior")
