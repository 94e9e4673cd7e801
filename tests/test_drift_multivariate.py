"""The multivariate and model-output parts of the family: exactness, calibration on
correlated real features (scikit-learn's shipped datasets, disjoint reference and
window), power where per-feature tests are weak, and how the parts are combined."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import datasets
from sklearn.covariance import ledoit_wolf as sklearn_ledoit_wolf
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ray_mlops.monitor._multivariate import MahalanobisTest, ledoit_wolf
from ray_mlops.monitor.drift import SHARES, DriftDetector, DriftReport

pytestmark = pytest.mark.timeout(60)
ALPHA = 0.05


def _margin(n: int, rate: float = ALPHA) -> float:
    """Upper 99.9 % binomial quantile of the false-alarm rate over n windows."""
    return stats.binom.ppf(0.999, n, rate) / n


@functools.lru_cache(maxsize=None)
def _real(name: str) -> tuple[pd.DataFrame, np.ndarray]:
    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine,
              "digits": datasets.load_digits}[name]
    bunch = loader(as_frame=True)
    return bunch.data.astype(float), bunch.target.to_numpy()


def _halves(frame: pd.DataFrame, window: int, rng: np.random.Generator,
            n_ref: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A reference and a disjoint window: the null of no drift, on real data."""
    order = rng.permutation(len(frame))
    n_ref = n_ref or len(frame) // 2
    return (frame.iloc[order[:n_ref]].reset_index(drop=True),
            frame.iloc[order[n_ref:n_ref + window]].reset_index(drop=True))


def _null_reports(name: str, window: int, trials: int, seed: int = 0) -> list[DriftReport]:
    frame, _ = _real(name)
    rng = np.random.default_rng(seed)
    return [DriftDetector(ref).test(win)
            for ref, win in (_halves(frame, window, rng) for _ in range(trials))]


# ------------------------------------------------------------------- exactness

def test_ledoit_wolf_equals_sklearn() -> None:
    z = np.random.default_rng(0).normal(size=(60, 8)) @ np.random.default_rng(1).normal(size=(8, 8))
    z -= z.mean(axis=0)
    expected, _ = sklearn_ledoit_wolf(z, assume_centered=True)
    assert np.allclose(ledoit_wolf(z), expected, rtol=1e-10, atol=1e-12)


def test_multivariate_p_value_is_scipy_ks_on_held_out_scores() -> None:
    frame, _ = _real("breast_cancer")
    ref, win = _halves(frame, 100, np.random.default_rng(2))
    test = MahalanobisTest(ref.to_numpy())
    held_out = test._reference.sorted[0]
    scores = test._score(win.to_numpy())
    res = test.compare(win.to_numpy())
    expected = stats.ks_2samp(held_out, scores)
    assert res.statistic[0] == pytest.approx(expected.statistic, abs=1e-12)
    assert abs(res.p_value[0] - expected.pvalue) <= 1e-9
    assert test.n_held_out == len(held_out) == len(ref) - test.n_fit


def test_multivariate_part_needs_two_features_and_rows() -> None:
    rng = np.random.default_rng(3)
    assert DriftDetector(pd.DataFrame({"x": rng.normal(size=300)})).test(
        pd.DataFrame({"x": rng.normal(size=30)})).multivariate is None
    small = pd.DataFrame(rng.normal(size=(15, 3)), columns=list("abc"))
    assert DriftDetector(small)._multivariate is None
    constant = pd.DataFrame({"a": rng.normal(size=200), "k": np.ones(200)})
    assert DriftDetector(constant)._multivariate is None  # one non-constant feature


def test_missing_values_are_imputed_in_the_score() -> None:
    rng = np.random.default_rng(4)
    ref = pd.DataFrame(rng.normal(size=(400, 3)), columns=list("abc"))
    ref.loc[rng.random(400) < 0.1, "a"] = np.nan
    win = pd.DataFrame(rng.normal(size=(50, 3)), columns=list("abc"))
    win.loc[:, "b"] = np.nan
    report = DriftDetector(ref).test(win)
    assert report.multivariate is not None and np.isfinite(report.multivariate.p_value)
    assert report.drift  # b all missing: the missing-share test fires


# ------------------------------------------------------------------- the union

def test_window_verdict_is_the_union_of_the_parts_at_their_shares() -> None:
    frame, _ = _real("breast_cancer")
    rng = np.random.default_rng(5)
    ref, _ = _halves(frame, 0, rng)
    det = DriftDetector(ref)
    only_inputs = DriftDetector(ref, multivariate=False)
    assert det.shares_ == pytest.approx({"inputs": 0.5 / 1.1, "multivariate": 0.5 / 1.1,
                                         "point_mass": 0.1 / 1.1})
    assert only_inputs.shares_ == pytest.approx({"inputs": 0.5 / 0.6, "point_mass": 0.1 / 0.6})
    ratio = det.shares_["inputs"] / only_inputs.shares_["inputs"]  # the same for point mass
    for noise in (0.0, 0.05, 0.1, 0.2, 0.4):
        win = frame.sample(100, random_state=int(noise * 100)).reset_index(drop=True)
        win = win + rng.normal(0, noise, win.shape) * frame.std().to_numpy()
        report, inputs = det.test(win), only_inputs.test(win)
        mv = report.multivariate
        assert mv.adjusted_p_value == pytest.approx(
            min(1.0, mv.p_value / det.shares_["multivariate"]))
        expected = min(1.0, inputs.p_value / ratio, mv.adjusted_p_value)
        assert report.p_value == pytest.approx(expected, rel=1e-12)
        assert report.drift == (report.p_value <= ALPHA)
        flagged = bool(report.drifted_features) or mv.drift
        assert report.drift == flagged
        for name, res in report.features.items():  # the same raw p-values, a lower level
            assert res.p_value == inputs.features[name].p_value
            assert res.point_mass_p_value == inputs.features[name].point_mass_p_value
            assert res.adjusted_p_value == pytest.approx(
                min(1.0, inputs.features[name].adjusted_p_value / ratio))


def test_report_round_trips_through_a_dict() -> None:
    frame, target = _real("breast_cancer")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(frame.iloc[:200], target[:200])
    det = DriftDetector(frame.iloc[200:450], model=model)
    report = det.test(frame.iloc[450:])
    masses = sum(f.point_mass_p_value is not None for f in report.features.values())
    assert set(report.outputs) == {"proba[1]"} and report.n_tests == 30 + 1 + 1 + masses
    assert DriftReport.from_dict(report.to_dict()) == report
    old = {k: v for k, v in report.to_dict().items() if k not in ("multivariate", "outputs")}
    assert DriftReport.from_dict(old).multivariate is None  # checkpoints from before


def test_model_that_fails_is_named() -> None:
    class Broken:
        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            raise RuntimeError("boom")

    frame, _ = _real("wine")
    with pytest.raises(ValueError, match="model could not score the reference: boom"):
        DriftDetector(frame, model=Broken())


# ------------------------------------------------------------------- calibration

@pytest.mark.parametrize("name,window", [("breast_cancer", 10),
                                         pytest.param("breast_cancer", 100, marks=pytest.mark.slow),  # ~5 s
                                         ("wine", 30)])
def test_default_detector_is_calibrated_on_real_correlated_features(name: str, window: int) -> None:
    trials = 300
    reports = _null_reports(name, window, trials)
    rate = np.mean([r.drift for r in reports])
    assert rate <= _margin(trials), rate
    mv = np.array([r.multivariate.p_value for r in reports])
    for level in (0.05, 0.2):  # the multivariate p-value alone is (conservatively) uniform
        assert np.mean(mv <= level) <= _margin(trials, level)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name,window", [("breast_cancer", 30), ("breast_cancer", 280),
                                         ("wine", 10), ("wine", 80), ("digits", 10),
                                         ("digits", 100), ("digits", 850)])
def test_default_detector_is_calibrated_everywhere(name: str, window: int) -> None:
    trials = 800  # about 25 s of CPU for digits at window 850
    reports = _null_reports(name, window, trials, seed=1)
    assert np.mean([r.drift for r in reports]) <= _margin(trials)
    mv = np.array([r.multivariate.p_value for r in reports])
    assert np.mean(mv <= ALPHA) <= _margin(trials)


def test_model_output_part_is_calibrated() -> None:
    frame, target = _real("breast_cancer")
    rng = np.random.default_rng(7)
    train = rng.permutation(len(frame))[:150]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(frame.iloc[train], target[train])
    pool = frame.drop(index=frame.index[train])
    trials = 200
    alarms, outputs = [], []
    for _ in range(trials):
        ref, win = _halves(pool, 100, rng)
        report = DriftDetector(ref, model=model).test(win)
        alarms.append(report.drift)
        outputs.append(report.outputs["proba[1]"].p_value)
    assert np.mean(alarms) <= _margin(trials)
    assert np.mean(np.array(outputs) <= ALPHA) <= _margin(trials)


# ------------------------------------------------------------------- power

def _power(name: str, shift, trials: int = 100, **options) -> float:
    frame, target = _real(name)
    rng = np.random.default_rng(8)
    hits = []
    for _ in range(trials):
        ref, win = _halves(frame, 100, rng)
        hits.append(DriftDetector(ref, **options).test(shift(win, rng)).drift)
    return float(np.mean(hits))


def test_noise_on_half_the_features_is_seen_by_the_multivariate_part() -> None:
    frame, _ = _real("breast_cancer")
    sd = frame.std()

    def noise(win: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        cols = rng.choice(frame.columns, size=15, replace=False)
        return win.assign(**{c: win[c] + rng.normal(0, 0.15 * sd[c], len(win)) for c in cols})

    with_mv = _power("breast_cancer", noise)
    without = _power("breast_cancer", noise, multivariate=False)
    assert with_mv >= 0.6 and with_mv >= without + 0.3, (with_mv, without)
    assert SHARES["inputs"] == SHARES["multivariate"]
