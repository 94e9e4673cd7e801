"""The monitor's output and label tests on multi-class and regression models, without Ray.

Seeded simulations through :class:`ray_mlops.monitor.reference.Reference` (the code the
monitor runs on every window): under the null (production from the reference's
distribution) each detector rejects at most at its level; under named alternatives it
rejects most windows. The features include a text and a vector column, which the input
test must leave out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ray_mlops.config import MonitorConfig
from ray_mlops.data.schema import FeatureSchema
from ray_mlops.monitor.drift import ErrorDriftDetector
from ray_mlops.monitor.outputs import CONFIDENCE, PREDICTION, agreement, output_frame, record_outputs
from ray_mlops.monitor.reference import Reference

CLASSES = np.array(["setosa", "versicolor", "virginica"], dtype=object)
WEIGHTS = np.array([[2.0, 0.0, -2.0], [0.0, 1.5, 0.5]])  # 2 numeric inputs → 3 logits
ALPHA = 0.15          # per window: alpha / 3 = 0.05 per detector, enough events for few windows
LEVEL = ALPHA / 3
REFERENCE_ROWS, WINDOW_ROWS, WINDOWS = 400, 200, 200
POWER_WINDOWS = 60    # power is far above its bound: fewer windows suffice
PER_REFERENCE = 5     # windows tested against one reference before a fresh one is drawn
SCHEMA = {"x0": "numeric", "x1": "numeric", "note": "text", "pix__0": "vector"}


def slack(level: float, n: int) -> float:  # windows sharing a reference are correlated: kept loose
    """Three binomial standard errors of a rejection rate estimated on ``n`` windows."""
    return 3 * np.sqrt(level * (1 - level) / n)


def inputs(rng: np.random.Generator, n: int, shift: float = 0.0, scale: float = 1.0) -> pd.DataFrame:
    x = rng.normal(shift, scale, size=(n, 2))
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "note": ["free text"] * n, "pix__0": rng.random(n)})


def classify(frame: pd.DataFrame, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed softmax 'model': (labels, probabilities)."""
    logits = frame[["x0", "x1"]].to_numpy() @ WEIGHTS / temperature
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    return CLASSES[proba.argmax(axis=1)], proba


def sample_label(rng: np.random.Generator, proba: np.ndarray) -> np.ndarray:
    """True labels drawn from the model's probabilities (a calibrated model)."""
    u = rng.random((len(proba), 1))
    return CLASSES[(u > proba.cumsum(axis=1)).sum(axis=1).clip(0, len(CLASSES) - 1)]


def records(frame: pd.DataFrame, predictions, probabilities, labels=None) -> pd.DataFrame:
    out = frame.copy()
    out["model_version"] = "v1"
    out["prediction"] = list(predictions)
    out["probabilities"] = None if probabilities is None else [list(p) for p in np.round(probabilities, 6)]
    if labels is not None:
        out["label"] = list(labels)
    return out


# -- multi-class -------------------------------------------------------------------------
def multiclass_reference(rng: np.random.Generator) -> Reference:
    """A reference as the monitor builds one: the model's outputs on unseen labeled rows."""
    ref = inputs(rng, REFERENCE_ROWS)
    labels, proba = classify(ref)
    correct = int(agreement(sample_label(rng, proba), labels).sum())
    schema = FeatureSchema("id", "species", "classification", dict(SCHEMA))
    return Reference("v1", schema, ref, outputs=output_frame(labels, proba, "classification"),
                     accuracy=(correct, REFERENCE_ROWS), config=MonitorConfig(alpha=ALPHA, min_labels=30))


@pytest.fixture(scope="module")
def multiclass():
    return multiclass_reference(np.random.default_rng(11))


def multiclass_windows(seed: int, windows: int = WINDOWS, *, shift=0.0, scale=1.0, temperature=1.0, noise=0.0):
    """A fresh reference every few windows (the unconditional error rate, as in production over versions)."""
    rng = np.random.default_rng(seed)
    for i in range(windows):
        if i % PER_REFERENCE == 0:
            reference = multiclass_reference(rng)
        yield reference.test(multiclass_records(rng, shift=shift, scale=scale, temperature=temperature, noise=noise))


def multiclass_records(rng: np.random.Generator, *, shift=0.0, scale=1.0, temperature=1.0, noise=0.0):
    frame = inputs(rng, WINDOW_ROWS, shift, scale)
    labels, proba = classify(frame, temperature)
    truth = sample_label(rng, proba)
    flip = rng.random(len(truth)) < noise
    truth[flip] = rng.choice(CLASSES, int(flip.sum()))
    return records(frame, labels, proba, truth)


def rates(tests) -> dict[str, float]:
    parts = [t.parts for t in tests]
    return {name: float(np.mean([p[name] is not None and p[name] <= LEVEL for p in parts]))
            for name in ("inputs", "predictions", "accuracy")}


def test_multiclass_reference_uses_label_counts_and_confidence_and_skips_text_and_vector(multiclass):
    assert multiclass.columns == ["x0", "x1"]
    assert multiclass.predictions.columns_ == [PREDICTION, CONFIDENCE]
    assert multiclass.predictions.kinds_ == {PREDICTION: "categorical", CONFIDENCE: "numeric"}
    result = multiclass.test(multiclass_records(np.random.default_rng(1)))
    assert {"x0", "x1", PREDICTION, CONFIDENCE, "accuracy"} <= set(result.report.features)
    assert "note" not in result.report.features and "pix__0" not in result.report.features
    assert result.report.features[PREDICTION].test.startswith(("chi2", "fisher"))
    assert result.report.features[CONFIDENCE].test == "ks"
    assert result.labeled == WINDOW_ROWS and 0.4 < result.accuracy < 1.0


def test_multiclass_prediction_and_accuracy_tests_are_calibrated_under_the_null():
    null = rates(multiclass_windows(seed=2))
    for name in ("inputs", "predictions", "accuracy"):
        assert null[name] <= LEVEL + slack(LEVEL, WINDOWS), (name, null)
    assert null["predictions"] > 0.005  # not vacuous: the test does reject at its edge


@pytest.mark.parametrize("alternative, change, detector", [
    ("class mix shifts", {"shift": 0.6}, "predictions"),
    ("less confident, same inputs' class mix", {"temperature": 2.5}, "predictions"),
    ("labels noisier (concept drift)", {"noise": 0.35}, "accuracy"),
])
def test_multiclass_tests_have_power_against_named_alternatives(alternative, change, detector):
    power = rates(multiclass_windows(seed=3, windows=POWER_WINDOWS, **change))
    assert power[detector] >= 0.8, (alternative, power)


def test_multiclass_accuracy_counts_equal_a_direct_fisher_test(multiclass):
    result = multiclass.test(multiclass_records(np.random.default_rng(4)))
    correct = round(result.accuracy * WINDOW_ROWS)
    ref = multiclass.accuracy
    expected = stats.fisher_exact([[ref.correct_, ref.total_ - ref.correct_], [correct, WINDOW_ROWS - correct]],
                                  alternative="greater").pvalue
    assert result.parts["accuracy"] == pytest.approx(expected, rel=1e-12)


def test_int_labels_and_log_round_trip_keep_the_same_outputs():
    rng = np.random.default_rng(5)
    frame = inputs(rng, 50)
    labels, proba = classify(frame)
    as_ints = np.array([list(CLASSES).index(v) for v in labels])
    logged = records(frame, as_ints, proba)
    logged["probabilities"] = [np.asarray(p) for p in logged["probabilities"]]  # as parquet reads them back
    outputs = record_outputs(logged, "classification")
    assert outputs[PREDICTION].tolist() == [str(v) for v in as_ints]
    assert np.allclose(outputs[CONFIDENCE], proba.max(axis=1), atol=1e-6)
    assert agreement(pd.Series(as_ints.tolist()), pd.Series(as_ints.astype(float))).all()
    assert not agreement(pd.Series(["1"]), pd.Series(["setosa"])).any()


# -- regression --------------------------------------------------------------------------
def regress(frame: pd.DataFrame) -> np.ndarray:
    return 3.0 * frame["x0"].to_numpy() - frame["x1"].to_numpy()


def regression_reference(rng: np.random.Generator) -> Reference:
    ref = inputs(rng, REFERENCE_ROWS)
    values = regress(ref)
    truth = values + rng.normal(0, 1.0, len(values))
    schema = FeatureSchema("id", "target", "regression", dict(SCHEMA))
    return Reference("v1", schema, ref, outputs=output_frame(values, None, "regression"), accuracy=None,
                     errors=np.abs(truth - values), config=MonitorConfig(alpha=ALPHA, min_labels=30))


def regression_windows(seed: int, windows: int = WINDOWS, *, shift=0.0, noise=1.0):
    rng = np.random.default_rng(seed)
    for i in range(windows):
        if i % PER_REFERENCE == 0:
            reference = regression_reference(rng)
        frame = inputs(rng, WINDOW_ROWS, shift)
        values = regress(frame)
        yield reference.test(records(frame, values, None, values + rng.normal(0, noise, len(values))))


def test_regression_uses_ks_on_values_and_an_error_test():
    rng = np.random.default_rng(0)
    errors = np.abs(rng.normal(size=300))
    window = np.abs(rng.normal(scale=1.3, size=120))
    report = ErrorDriftDetector(errors, alpha=0.05).test(window)
    expected = stats.mannwhitneyu(window, errors, alternative="greater")
    assert report.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert report.features["error"].effect_size == pytest.approx(window.mean() - errors.mean())


def test_regression_prediction_and_error_tests_are_calibrated_under_the_null():
    assert isinstance(regression_reference(np.random.default_rng(0)).accuracy, ErrorDriftDetector)
    tests = list(regression_windows(seed=6))
    null = rates(tests)
    for name in ("inputs", "predictions", "accuracy"):
        assert null[name] <= LEVEL + slack(LEVEL, WINDOWS), (name, null)
    first = tests[0]
    assert first.accuracy is None and 0.5 < first.error < 1.1
    assert first.report.features[PREDICTION].test == "ks" and "error" in first.report.features


@pytest.mark.parametrize("alternative, change, detector", [
    ("outputs shift", {"shift": 0.6}, "predictions"),
    ("errors grow (concept drift)", {"noise": 1.5}, "accuracy"),
])
def test_regression_tests_have_power_against_named_alternatives(alternative, change, detector):
    power = rates(regression_windows(seed=7, windows=POWER_WINDOWS, **change))
    assert power[detector] >= 0.8, (alternative, power)
