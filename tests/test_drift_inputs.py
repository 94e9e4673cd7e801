"""Bad input: a ValueError naming the column or option, or a documented verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ray_mlops.monitor.drift import DriftDetector

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=1000), "n": rng.integers(0, 5, 1000),
                         "c": rng.choice(["a", "b"], 1000), "flag": rng.random(1000) < 0.3})


@pytest.fixture(scope="module")
def detector(reference: pd.DataFrame) -> DriftDetector:
    return DriftDetector(reference)


def test_types_are_inferred(detector: DriftDetector) -> None:
    assert detector.kinds_ == {"x": "numeric", "n": "numeric", "c": "categorical",
                               "flag": "categorical"}


def test_categorical_list_overrides_inference(reference: pd.DataFrame) -> None:
    det = DriftDetector(reference, categorical=["n", "c", "flag"])
    assert det.kinds_["n"] == "categorical"
    with pytest.raises(ValueError, match="'c'.*categorical="):
        DriftDetector(reference, categorical=["flag"])
    with pytest.raises(ValueError, match="nope"):
        DriftDetector(reference, categorical=["nope"])


@pytest.mark.parametrize("kwargs,match", [({"alpha": 0}, "alpha"), ({"alpha": 1.5}, "alpha"),
                                          ({"correction": "holm"}, "correction"),
                                          ({"combine": "min"}, "combine")])
def test_bad_options_are_named(reference: pd.DataFrame, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DriftDetector(reference, **kwargs)


def test_bad_reference() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        DriftDetector(pd.DataFrame({"x": []}))
    with pytest.raises(ValueError, match="'z'"):
        DriftDetector(pd.DataFrame({"x": [1.0, 2.0], "z": [np.nan, np.nan]}))
    with pytest.raises(ValueError, match="'t'.*unsupported"):
        DriftDetector(pd.DataFrame({"t": pd.date_range("2024-01-01", periods=3)}))


def test_empty_window(detector: DriftDetector, reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="empty"):
        detector.test(reference.iloc[:0])


def test_missing_and_extra_columns_are_named(detector: DriftDetector,
                                             reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="missing.*'c'"):
        detector.test(reference.drop(columns="c"))
    with pytest.raises(ValueError, match="not in the reference.*'extra'"):
        detector.test(reference.assign(extra=1.0))
    with pytest.raises(ValueError, match="DataFrame"):
        detector.test(reference.to_numpy())


def test_type_changes_are_named(detector: DriftDetector, reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="'x' changed type"):
        detector.test(reference.assign(x="high"))
    with pytest.raises(ValueError, match="'c' changed type"):
        detector.test(reference.assign(c=1.5))
    numeric_as_text = detector.test(reference.assign(x=reference["x"].astype(object)))
    assert not numeric_as_text.drift  # numbers that arrive as objects are still numbers


def test_all_missing_window_column_is_flagged_by_missing_share(
        detector: DriftDetector, reference: pd.DataFrame) -> None:
    window = reference.sample(200, random_state=1).assign(x=np.nan)
    report = detector.test(window)
    feature = report.features["x"]
    assert feature.test == "ks (no values)" and feature.p_value == 1.0
    assert feature.missing_share_window == 1.0 and feature.drift and report.drift


def test_window_of_one_row(detector: DriftDetector, reference: pd.DataFrame) -> None:
    report = detector.test(reference.iloc[[3]])
    assert report.features["x"].n_window == 1 and report.multivariate.n_window == 1
    assert 0.0 < report.features["x"].p_value <= 1.0
    assert report.drift == (report.p_value <= report.alpha)
    assert not DriftDetector(reference, multivariate=False).test(reference.iloc[[3]]).drift


def test_constant_columns_have_documented_verdicts() -> None:
    ref = pd.DataFrame({"k": np.full(500, 2.0), "c": ["only"] * 500})
    det = DriftDetector(ref)
    same = det.test(ref.iloc[:50])
    assert not same.drift and same.n_tests == 1  # one level / one value cannot reject
    assert same.features["k"].point_mass_p_value is None
    assert same.features["c"].test == "chi2 (one level)"
    moved = det.test(pd.DataFrame({"k": np.full(50, 3.0), "c": ["new"] * 50}))
    assert moved.drift and set(moved.drifted_features) == {"k", "c"}


def test_nullable_dtypes_and_categories(reference: pd.DataFrame) -> None:
    ref = reference.astype({"n": "Int64", "c": "category"})
    det = DriftDetector(ref)
    window = ref.sample(300, random_state=2).copy()
    window.loc[window.index[:3], "n"] = pd.NA
    report = det.test(window)
    assert report.features["n"].missing_p_value is not None
    assert not report.drift
