"""Calibration under no shift and power under known shifts, by seeded simulation.

The per-feature part of the family (``multivariate=False, point_mass=False``; the
multivariate and model-output parts are proven in ``test_drift_multivariate.py``, the
point-mass part in ``test_drift_point_mass.py``). Simulations are shared
between tests (one per data kind and window size). Each
window is tested once with DriftDetector; the raw p-values of its family are then
re-decided under every correction and combination (the equivalence with a detector
built for that option is checked in ``test_family_decision_equals_detector``).
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ray_mlops.monitor import _multitest
from ray_mlops.monitor.drift import DriftDetector, DriftReport

ALPHA = 0.05
N_WINDOWS = 1000
N_PER_REFERENCE = 20
OPTIONS = [("bonferroni", None), ("bh", None), ("none", None), ("bonferroni", "fisher"),
           ("bonferroni", "cauchy")]
LEVELS = np.array(["a", "b", "c", "d", "e"])
PROBS = np.array([0.45, 0.3, 0.15, 0.07, 0.03])


def _margin(n: int, rate: float = ALPHA) -> float:
    """Upper 99.9 % binomial quantile of the false-alarm rate over n windows."""
    return stats.binom.ppf(0.999, n, rate) / n


def _frame(rng: np.random.Generator, rows: int, kind: str, shift: float = 0.0,
           missing: float = 0.02) -> pd.DataFrame:
    data = {}
    if kind in ("numeric", "mixed"):
        for i in range(3):
            data[f"x{i}"] = rng.normal(shift if i == 0 else 0.0, 1.0, rows)
        data["x_int"] = rng.poisson(3, rows).astype(float)  # ties
    if kind in ("categorical", "mixed"):
        for i in range(2):
            data[f"c{i}"] = rng.choice(LEVELS, rows, p=PROBS).astype(object)
    frame = pd.DataFrame(data)
    first = frame.columns[0]
    frame.loc[rng.random(rows) < missing, first] = np.nan  # missing share under test
    return frame


def _family_p_values(report: DriftReport) -> np.ndarray:
    p = []
    for res in report.features.values():
        if not res.test.endswith("(no values)") and res.test != "chi2 (one level)":
            p.append(res.p_value)
        if res.missing_p_value is not None:
            p.append(res.missing_p_value)
    return np.array(p)


@functools.lru_cache(maxsize=None)
def _simulate(kind: str, size: int, seed: int = 0) -> tuple[list[np.ndarray], list[DriftReport]]:
    """N_WINDOWS unchanged windows, against a fresh reference every N_PER_REFERENCE.

    Calibration is a statement over reference *and* window draws: against one fixed
    reference the false-alarm rate scatters around α (a reference that happens to
    have 1.5 % missing values makes 2 % windows look odd), so references are redrawn.
    """
    rng = np.random.default_rng(seed)
    reports = []
    for _ in range(N_WINDOWS // N_PER_REFERENCE):
        detector = DriftDetector(_frame(rng, 2000, kind), alpha=ALPHA, correction="none",
                                 multivariate=False, point_mass=False)
        reports += [detector.test(_frame(rng, size, kind)) for _ in range(N_PER_REFERENCE)]
    return [_family_p_values(r) for r in reports], reports


SLOW = pytest.mark.slow  # windows of 1,000 rows: ~2-3 s each; the fast lane keeps 10 and 100


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind,size", [("numeric", 10), pytest.param("numeric", 1000, marks=SLOW),
                                       ("categorical", 10), pytest.param("categorical", 1000, marks=SLOW),
                                       ("mixed", 10), ("mixed", 100), pytest.param("mixed", 1000, marks=SLOW)])
def test_false_alarm_rate_at_most_alpha(kind: str, size: int) -> None:
    families, reports = _simulate(kind, size)
    assert all(r.n_tests == len(f) for r, f in zip(reports, families))
    for correction, combination in OPTIONS:
        alarms = [_multitest.family_p_value(p, correction, combination) <= ALPHA
                  for p in families]
        rate = np.mean(alarms)
        if correction == "none":  # per test calibrated, the window verdict is not
            per_test = np.concatenate(families)
            assert np.mean(per_test <= ALPHA) <= _margin(len(per_test))
        else:
            assert rate <= _margin(N_WINDOWS), (correction, combination, rate)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("test_name,kind", [("ks", "numeric"), ("chi2", "categorical"),
                                            ("fisher", "categorical")])
def test_each_test_is_calibrated(test_name: str, kind: str) -> None:
    size = 10 if test_name == "fisher" else 1000
    _, reports = _simulate(kind, size)
    p = np.array([res.p_value for r in reports for res in r.features.values()
                  if res.test == test_name])
    assert len(p) >= N_WINDOWS
    for level in (0.01, 0.05, 0.1):
        assert np.mean(p <= level) <= _margin(len(p), level)


@pytest.mark.timeout(60)
def test_missing_share_test_is_calibrated() -> None:
    _, reports = _simulate("numeric", 1000)
    p = np.array([r.features["x0"].missing_p_value for r in reports])
    p = p[p != np.array(None)].astype(float)
    assert len(p) >= 0.9 * N_WINDOWS
    assert np.mean(p <= ALPHA) <= _margin(len(p))


@pytest.mark.timeout(60)
def test_uncorrected_window_verdict_is_not_calibrated() -> None:
    """Why the correction matters: 'none' over 7 tests fires far above alpha."""
    families, _ = _simulate("mixed", 100)
    rate = np.mean([p.min() <= ALPHA for p in families])
    assert rate > 2 * ALPHA


@pytest.mark.timeout(60)
@pytest.mark.parametrize("correction,combination", OPTIONS)
def test_family_decision_equals_detector(correction: str, combination: str | None) -> None:
    rng = np.random.default_rng(14)
    ref = _frame(rng, 3000, "mixed")
    raw = DriftDetector(ref, correction="none")
    det = DriftDetector(ref, correction=correction, combine=combination, multivariate=False,
                        point_mass=False)
    for w in range(40):
        window = _frame(rng, 200, "mixed", shift=0.1 * (w % 4))
        expected = _multitest.family_p_value(_family_p_values(raw.test(window)),
                                             correction, combination)
        report = det.test(window)
        assert report.p_value == pytest.approx(expected, rel=1e-12, abs=1e-300)
        assert report.drift == (expected <= ALPHA)


# ------------------------------------------------------------------------------ power

def _power(make_window, reference: pd.DataFrame, n: int = 200, **options) -> float:
    det = DriftDetector(reference, **options)
    rng = np.random.default_rng(21)
    return float(np.mean([det.test(make_window(rng)).drift for _ in range(n)]))


def _normal(rng: np.random.Generator, rows: int, k: int, loc: float = 0.0,
            scale: float = 1.0, moved: int = 1) -> pd.DataFrame:
    cols = {f"x{i}": rng.normal(loc if i < moved else 0.0, scale if i < moved else 1.0, rows)
            for i in range(k)}
    return pd.DataFrame(cols)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _normal(np.random.default_rng(20), 5000, 10)


@pytest.mark.timeout(60)
def test_power_mean_shift_one_feature(reference: pd.DataFrame) -> None:
    assert _power(lambda r: _normal(r, 200, 10, loc=0.4), reference) >= 0.9


@pytest.mark.timeout(60)
def test_power_scale_change(reference: pd.DataFrame) -> None:
    assert _power(lambda r: _normal(r, 300, 10, scale=1.5), reference) >= 0.8


@pytest.mark.timeout(60)
def test_power_missing_values(reference: pd.DataFrame) -> None:
    def window(r: np.random.Generator) -> pd.DataFrame:
        frame = _normal(r, 200, 10)
        frame.loc[r.random(200) < 0.05, "x3"] = np.nan
        return frame
    assert _power(window, reference) >= 0.9


@pytest.mark.timeout(60)
def test_power_category_frequency() -> None:
    rng = np.random.default_rng(22)
    ref = pd.DataFrame({"c": rng.choice(LEVELS, 5000, p=PROBS)})
    shifted = np.array([0.35, 0.3, 0.2, 0.1, 0.05])
    power = _power(lambda r: pd.DataFrame({"c": r.choice(LEVELS, 300, p=shifted)}), ref)
    assert power >= 0.8


@pytest.mark.timeout(60)
def test_power_many_small_shifts_fisher_beats_bonferroni(reference: pd.DataFrame) -> None:
    def window(r: np.random.Generator) -> pd.DataFrame:
        return _normal(r, 200, 10, loc=0.12, moved=10)
    bonferroni = _power(window, reference, multivariate=False)
    fisher = _power(window, reference, combine="fisher", multivariate=False)
    assert fisher >= 0.6
    assert fisher >= bonferroni + 0.2
