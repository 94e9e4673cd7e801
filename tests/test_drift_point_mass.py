"""The point-mass test (a feature stuck at one value in part of the rows): its tail
equals scipy's hypergeometric, it is calibrated on real tied features and on integer
data (seeded simulation, disjoint reference and window), and it sees knockouts that KS
sees at half strength."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import datasets

from ray_mlops.monitor._ks import NumericReference
from ray_mlops.monitor._pointmass import (
    PointMassReference,
    hypergeom_mode,
    hypergeom_pmf,
    upper_tail,
)
from ray_mlops.monitor.drift import DriftDetector

pytestmark = pytest.mark.timeout(60)
ALPHA = 0.05


def _margin(n: int, rate: float = ALPHA) -> float:
    """Upper 99.9 % binomial quantile of a rejection rate over n trials."""
    return stats.binom.ppf(0.999, n, rate) / n


@functools.lru_cache(maxsize=None)
def _real(name: str) -> pd.DataFrame:
    loader = {"breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits,
              "wine": datasets.load_wine}[name]
    return loader(as_frame=True).data.astype(float)


def _point_mass(ref: np.ndarray, win: np.ndarray) -> list[float | None]:
    numeric = NumericReference(ref)
    return PointMassReference(numeric.sorted).p_values(numeric.locate(win))


def test_tail_and_pmf_equal_scipy_hypergeom() -> None:
    """Above the mode the tail is scipy's (an upper bound where the series is cut)."""
    rng = np.random.default_rng(0)
    total = rng.integers(50, 3000, 600).astype(float)
    good = np.minimum(total, rng.integers(1, 400, 600))
    draws = np.minimum(total, rng.integers(1, 300, 600))
    k = np.minimum(np.minimum(good, draws), rng.integers(0, 80, 600)).astype(float)
    assert np.allclose(hypergeom_pmf(k, total, good, draws),
                       stats.hypergeom.pmf(k, total, good, draws), rtol=1e-9, atol=1e-300)
    above = k > hypergeom_mode(total, good, draws)
    assert above.sum() > 100
    ours = upper_tail(k[above], total[above], good[above], draws[above])
    expected = stats.hypergeom.sf(k[above] - 1, total[above], good[above], draws[above])
    assert np.all(ours >= expected * (1 - 1e-9))
    far = expected < 1e-3  # far in the tail the series converges within the terms
    assert far.sum() > 20 and np.allclose(ours[far], expected[far], rtol=1e-9, atol=0)


def test_no_repeated_value_means_no_test() -> None:
    rng = np.random.default_rng(1)
    assert _point_mass(rng.normal(size=(500, 3)), rng.normal(size=(50, 3))) == [None] * 3


@pytest.mark.parametrize("name,window", [("breast_cancer", 30), ("breast_cancer", 100),
                                         ("digits", 100), ("wine", 30)])
def test_calibrated_on_real_tied_features(name: str, window: int) -> None:
    """Every feature's p-value rejects at most α of disjoint, unshifted windows."""
    frame = _real(name).to_numpy()
    rng = np.random.default_rng(2)
    rejected, tested = 0, 0
    for _ in range(60):
        order = rng.permutation(len(frame))
        n_ref = min(len(frame) // 2, len(frame) - window)
        p = _point_mass(frame[order[:n_ref]], frame[order[n_ref:n_ref + window]])
        tested += sum(v is not None for v in p)
        rejected += sum(v is not None and v <= ALPHA for v in p)
    assert tested > 0
    assert rejected / tested <= _margin(tested)


def test_calibrated_on_integer_and_rounded_data() -> None:
    rng = np.random.default_rng(3)
    rates = []
    for make in (lambda n: rng.poisson(2.0, (n, 4)).astype(float),
                 lambda n: np.round(rng.normal(size=(n, 4)), 1),
                 lambda n: np.where(rng.random((n, 4)) < 0.3, 0.0, rng.exponential(size=(n, 4)))):
        p = [v for _ in range(100) for v in _point_mass(make(1000), make(100))]
        tested = [v for v in p if v is not None]
        rates.append(np.mean(np.array(tested) <= ALPHA))
        assert rates[-1] <= _margin(len(tested))


def test_knockout_is_seen_where_ks_is_weak() -> None:
    """20 % of a window's rows stuck at the median of one breast-cancer feature."""
    frame = _real("breast_cancer")
    rng = np.random.default_rng(4)
    hits = {True: 0, False: 0}
    for _ in range(40):
        order = rng.permutation(len(frame))
        ref = frame.iloc[order[:284]].reset_index(drop=True)
        win = frame.iloc[order[284:384]].reset_index(drop=True)
        win.loc[rng.random(len(win)) < 0.2, "mean area"] = ref["mean area"].median()
        for point_mass in (True, False):
            report = DriftDetector(ref, point_mass=point_mass).test(win)
            hits[point_mass] += "mean area" in report.drifted_features
    assert hits[True] >= 36 and hits[False] <= 12


def test_report_names_the_stuck_feature() -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame(rng.normal(size=(1000, 4)), columns=list("abcd"))
    win = pd.DataFrame(rng.normal(size=(100, 4)), columns=list("abcd"))
    win.loc[:9, "b"] = 0.0  # a default value, 10 % of the rows
    report = DriftDetector(ref).test(win)
    assert report.drift and report.drifted_features == ["b"]
    assert report.features["b"].point_mass_p_value < 1e-8
    assert report.features["b"].p_value > 0.05  # KS alone does not see it
    assert all(report.features[c].point_mass_p_value is None for c in "acd")
