"""Drift statistics: calibrated, vectorized tests of a window against a reference.

Pure numpy/scipy/pandas (no Ray), so the monitor actor, the retraining gate and the
tests all use the same code.

* :class:`DriftDetector` — input (feature) drift. Numeric features: two-sample
  Kolmogorov–Smirnov, p-values equal to ``scipy.stats.ks_2samp`` (default ``auto``
  method); categorical features: chi-squared on level counts (levels unseen in the
  reference count), p-values equal to ``scipy.stats.chi2_contingency`` on the pooled
  table, Fisher's exact test when a 2 × 2 table has small expected counts. The share of
  missing values is tested too. Wasserstein distance (numeric) and Jensen–Shannon
  distance (categorical) are reported beside the p-values.
* :class:`PredictionDriftDetector` — drift of the model's outputs.
* :class:`PerformanceDriftDetector` — accuracy drop once labels come back (concept
  drift, which input tests cannot see); :class:`ErrorDriftDetector` — its regression
  counterpart (larger absolute errors).
* :class:`DriftStream` — patience and cooldown over a stream of windows, with a
  verdict history and a plain-dict state for checkpointing.

The family of tests in one window is every distribution test with data, plus the
missing-share test of each feature that has a missing value in the reference or the
window (a test that cannot reject, given those counts, is left out; conditioning on
them keeps the family-wise error at most α). ``correction`` decides which features are
flagged and, unless ``combine`` is set, the window verdict.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ray_mlops.monitor import _multitest
from ray_mlops.monitor._categorical import CategoricalReference, jensen_shannon, table_test
from ray_mlops.monitor._ks import NumericComparison, NumericReference
from ray_mlops.monitor._multivariate import MahalanobisTest

__all__ = [
    "DriftDetector",
    "DriftReport",
    "DriftStream",
    "ErrorDriftDetector",
    "FeatureResult",
    "PerformanceDriftDetector",
    "PredictionDriftDetector",
    "StreamVerdict",
]

NUMERIC = "numeric"
CATEGORICAL = "categorical"


@dataclass(frozen=True)
class FeatureResult:
    """The verdict on one feature in one window.

    ``test``, ``statistic`` and ``p_value`` describe the distribution test (raw, not
    corrected); ``missing_p_value`` the missing-share test (``None`` when no value is
    missing in reference or window). ``drift`` is whether either test is rejected
    after the detector's correction; ``adjusted_p_value`` is the smaller corrected
    p-value of the two. When the window has no non-missing value the distribution test
    is ``"<test> (no values)"`` with ``p_value = 1.0``: the missing-share test decides.
    ``exact`` is False when a large-sample KS p-value is the asymptotic one (Stephens),
    reported because it is far from the decision threshold (see ``_ks``); the decision
    is then the one scipy's exact p-value gives.
    """

    test: str
    statistic: float
    p_value: float
    drift: bool
    adjusted_p_value: float = 1.0
    effect_size: float = float("nan")
    effect_metric: str = ""
    missing_p_value: float | None = None
    missing_share_reference: float = 0.0
    missing_share_window: float = 0.0
    n_reference: int = 0
    n_window: int = 0
    exact: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return asdict(self)


@dataclass(frozen=True)
class DriftReport:
    """Fixed-shape result of one test: window verdict, family p-value, per feature.

    ``multivariate`` is the Mahalanobis-score test across the numeric features (``None``
    when the detector has none) and ``outputs`` the tests of the model's outputs (empty
    without a model); their ``adjusted_p_value`` and ``drift`` are on the same scale as
    the features', so ``drift`` is True iff some feature, the multivariate test or an
    output is flagged.
    """

    drift: bool
    p_value: float
    features: dict[str, FeatureResult]
    alpha: float = 0.05
    correction: str = "bonferroni"
    combine: str | None = None
    n_tests: int = 0
    n_window: int = 0
    multivariate: FeatureResult | None = None
    outputs: dict[str, FeatureResult] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        """Names of the features flagged after correction."""
        return [name for name, res in self.features.items() if res.drift]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (``DriftReport.from_dict`` reverses it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        """Rebuild a report from :meth:`to_dict` output."""
        feats = {k: FeatureResult(**v) for k, v in data["features"].items()}
        outputs = {k: FeatureResult(**v) for k, v in (data.get("outputs") or {}).items()}
        multi = data.get("multivariate")
        return cls(**{**data, "features": feats, "outputs": outputs,
                      "multivariate": None if multi is None else FeatureResult(**multi)})


# ---------------------------------------------------------------- validation helpers

def _check_options(alpha: float, correction: str, combine: str | None) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < 1.0):
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if correction not in _multitest.CORRECTIONS:
        raise ValueError(f"correction must be one of {_multitest.CORRECTIONS}, got {correction!r}")
    if combine is not None and combine not in _multitest.COMBINATIONS:
        raise ValueError(f"combine must be None or one of {_multitest.COMBINATIONS}, "
                         f"got {combine!r}")


@functools.lru_cache(maxsize=256)
def _is_numeric_dtype(dtype: Any) -> bool:
    """Numeric and not bool (memoised: pandas' dtype checks cost microseconds each)."""
    return pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)


def _is_numeric(series: pd.Series) -> bool:
    return _is_numeric_dtype(series.dtype)


def _is_categorical_dtype(series: pd.Series) -> bool:
    dtype = series.dtype
    return (pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_object_dtype(dtype)
            or pd.api.types.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype))


def _infer_kinds(reference: pd.DataFrame, categorical: Iterable[str] | None) -> dict[str, str]:
    """``{column: "numeric" | "categorical"}`` from dtypes or the ``categorical`` list."""
    forced = None if categorical is None else list(categorical)
    unknown = [c for c in forced or [] if c not in reference.columns]
    if unknown:
        raise ValueError(f"categorical names columns not in the reference: {unknown}")
    kinds = {}
    for name in reference.columns:
        col = reference[name]
        if (forced is not None and name in forced) or (forced is None and _is_categorical_dtype(col)):
            kinds[name] = CATEGORICAL
        elif _is_numeric(col):
            kinds[name] = NUMERIC
        else:
            hint = " (list it in categorical=)" if forced is not None else ""
            raise ValueError(f"column {name!r}: unsupported dtype {col.dtype} for drift "
                             f"tests{hint}; convert it to numeric or categorical")
    return kinds


def _numeric_column(series: pd.Series, name: str, where: str) -> np.ndarray:
    """Float values of a numeric feature; ValueError naming it if its type changed."""
    if _is_numeric(series):
        return series.to_numpy(dtype=float, na_value=np.nan)
    if series.isna().all():
        return np.full(len(series), np.nan)
    if not pd.api.types.is_bool_dtype(series.dtype) and pd.api.types.is_object_dtype(series.dtype):
        try:
            return pd.to_numeric(series, errors="raise").to_numpy(dtype=float, na_value=np.nan)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"column {name!r} changed type: numeric in the reference, "
                     f"{series.dtype} in the {where}")


def _numeric_matrix(frame: pd.DataFrame, names: list[str], where: str) -> np.ndarray:
    """Rows × features float matrix (NaN = missing)."""
    if not names:
        return np.empty((len(frame), 0))
    where = {name: i for i, name in enumerate(frame.columns)}
    positions = [where[n] for n in names]  # by position: label lookups cost more
    if all(_is_numeric_dtype(d) for d in frame.dtypes.to_numpy()[positions]):
        return frame.iloc[:, positions].to_numpy(dtype=float, na_value=np.nan)
    return np.column_stack([_numeric_column(frame[n], n, where) for n in names])


def _holds_strings(series: pd.Series, present: np.ndarray) -> bool | None:
    """Whether the non-missing values (``present``: e.g. the distinct ones) are strings
    (None when there are none)."""
    if present.size == 0:
        return None
    if _is_numeric(series) or _is_bool_dtype(series.dtype):
        return False
    return isinstance(present[0], str)


@functools.lru_cache(maxsize=256)
def _is_bool_dtype(dtype: Any) -> bool:
    return pd.api.types.is_bool_dtype(dtype)


def _check_window_frame(window: Any, columns: list[str]) -> None:
    if not isinstance(window, pd.DataFrame):
        raise ValueError(f"window must be a pandas DataFrame, got {type(window).__name__}")
    if len(window) == 0:
        raise ValueError("window is empty: at least one row is needed")
    have, want = set(window.columns), set(columns)
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"window is missing reference columns: {missing}")
    extra = [c for c in window.columns if c not in want]
    if extra:
        raise ValueError(f"window has columns not in the reference: {extra}")


# ---------------------------------------------------------------- the detector

@dataclass
class _Test:
    """One hypothesis of the family, before correction."""

    feature: str
    missing: bool
    p_value: float


@dataclass
class _Partial:
    """Per-feature numbers gathered before the correction is applied."""

    test: str
    statistic: float
    p_value: float
    effect_size: float
    effect_metric: str
    n_reference: int
    n_window: int
    active: bool
    missing_p_value: float | None = None
    missing_share_reference: float = 0.0
    missing_share_window: float = 0.0
    adjusted: list[float] = field(default_factory=list)
    exact: bool = True


#: Shares of α for the parts of a window's family, normalised over the parts a detector
#: has: the per-feature tests, the multivariate test, the model's outputs. Whatever the
#: shares, a part at level ``share · α`` and the union over parts keep the window's
#: false-alarm rate at most α (Bonferroni across parts, valid under any dependence).
SHARES = {"inputs": 0.5, "multivariate": 0.5, "outputs": 0.5}


def _model_outputs(model: Any, frame: pd.DataFrame, where: str) -> tuple[np.ndarray, list[str]]:
    """The model's outputs on ``frame`` as rows × outputs, with their names.

    ``predict_proba`` when the model has it (one column fewer than the classes for two
    classes: the other is its complement), else ``predict`` (a regression's value).
    """
    try:
        if hasattr(model, "predict_proba"):
            values = np.asarray(model.predict_proba(frame), dtype=float)
            classes = list(getattr(model, "classes_", range(values.shape[1])))
            names = [f"proba[{c}]" for c in classes]
            if values.shape[1] == 2:
                values, names = values[:, 1:], names[1:]
        else:
            values = np.asarray(model.predict(frame), dtype=float).reshape(len(frame), -1)
            names = ["prediction"] if values.shape[1] == 1 else [
                f"prediction[{i}]" for i in range(values.shape[1])]
    except Exception as exc:  # a model's own errors: say which input it failed on
        raise ValueError(f"model could not score the {where}: {exc}") from exc
    return values, names


class DriftDetector:
    """Test windows of production data against a reference sample.

    The family of one window has up to three parts, each given a share of α
    (:data:`SHARES`): the per-feature tests (KS, chi-squared, missing share, combined by
    ``correction``), one multivariate test (the squared Mahalanobis distance of the rows,
    KS-tested against held-out reference rows, see ``_multivariate``) and, when a
    ``model`` is given, KS tests of its predicted probabilities (black-box shift
    detection). The window drifts when any part rejects at its share.

    Args:
        reference: the reference sample (e.g. the training feature table or the
            reference profile stored by ingestion). Every column is a feature.
        alpha: the level: the probability of flagging an unchanged window is at most
            ``alpha`` (for ``bh`` it is the false discovery rate over features).
        correction: ``"bonferroni"`` (default), ``"bh"`` or ``"none"``.
        categorical: names of categorical columns; the rest must be numeric. ``None``
            infers from dtypes (object, string, category, bool → categorical).
        combine: ``None`` (the feature part rejects when a feature is flagged),
            ``"fisher"`` or ``"cauchy"`` (the feature part is a combination test across
            all its tests; see ``_multitest``).
        multivariate: add the multivariate test (default; needs two numeric features
            and 20 reference rows). It sees noise, broken correlations and shifts spread
            over many features that per-feature tests miss.
        model: a fitted model (``predict_proba`` or ``predict`` on a frame like the
            reference) whose outputs are tested too. The reference must be data the
            model was *not* trained on, or its outputs there look unlike any window's.
        exact_p_values: report scipy's KS p-value for every test (the default: the
            contract is that p-values agree with scipy's). False is faster on large
            samples: a KS p-value far from its decision threshold is then the asymptotic
            one (``FeatureResult.exact`` is False), within 1.25x of scipy's, and every
            decision is identical.

    Raises:
        ValueError: naming the option or column at fault (bad ``alpha``, unknown
            correction, empty reference, all-missing or unsupported column).

    Example:
        >>> import numpy as np, pandas as pd
        >>> rng = np.random.default_rng(0)
        >>> ref = pd.DataFrame({"x": rng.normal(size=500), "c": rng.choice(["a", "b"], 500)})
        >>> det = DriftDetector(ref)
        >>> det.test(ref.sample(200, random_state=1)).drift
        False
        >>> shifted = ref.assign(x=ref["x"] + 1.0)
        >>> report = det.test(shifted)
        >>> report.drift, report.drifted_features, report.features["x"].test
        (True, ['x'], 'ks')
    """

    def __init__(self, reference: pd.DataFrame, *, alpha: float = 0.05,
                 correction: str = "bonferroni", categorical: Iterable[str] | None = None,
                 combine: str | None = None, multivariate: bool = True,
                 model: Any = None, exact_p_values: bool = True) -> None:
        _check_options(alpha, correction, combine)
        if not isinstance(reference, pd.DataFrame) or reference.shape[0] == 0 or reference.shape[1] == 0:
            raise ValueError("reference must be a non-empty pandas DataFrame")
        missing = reference.isna().sum()
        empty = [c for c in reference.columns if missing[c] == len(reference)]
        if empty:
            raise ValueError(f"reference columns with no non-missing value: {empty}")
        self.alpha = float(alpha)
        self.correction = correction
        self.combine = combine
        self.exact_p_values = exact_p_values
        self.kinds_ = _infer_kinds(reference, categorical)
        self.columns_ = list(reference.columns)
        self.numeric_ = [c for c in self.columns_ if self.kinds_[c] == NUMERIC]
        self.categorical_ = [c for c in self.columns_ if self.kinds_[c] == CATEGORICAL]
        self.n_reference_ = len(reference)
        matrix = _numeric_matrix(reference, self.numeric_, "reference")
        self._numeric = NumericReference(matrix)
        self._categorical = {c: CategoricalReference(reference[c]) for c in self.categorical_}
        self._ref_missing = {c: int(missing[c]) for c in self.columns_}
        self._multivariate = MahalanobisTest(matrix) if multivariate else None
        if self._multivariate is not None and not self._multivariate.available:
            self._multivariate = None
        self.model = model
        self._outputs, self.outputs_ = None, []
        if model is not None:
            values, self.outputs_ = _model_outputs(model, reference, "reference")
            self._outputs = NumericReference(values)
        present = ["inputs"] + ["multivariate"] * (self._multivariate is not None) + [
            "outputs"] * (model is not None)
        total = sum(SHARES[p] for p in present)
        self.shares_ = {p: SHARES[p] / total for p in present}

    def test(self, window: pd.DataFrame) -> DriftReport:
        """Test one window (same columns as the reference) and return a DriftReport.

        Raises:
            ValueError: empty window, missing or extra columns, or a column whose
                type changed (the message names it).
        """
        _check_window_frame(window, self.columns_)
        numeric = _numeric_matrix(window, self.numeric_, "window")
        categorical = self._categorical_parts(window)
        win_missing = dict(zip(self.numeric_, np.isnan(numeric).sum(axis=0).tolist()))
        win_missing.update({c: len(window) - p.n_window for c, p in categorical.items()})
        n_inputs = self._count_tests(numeric, categorical, win_missing)
        parts = {**self._numeric_parts(numeric, self._threshold("inputs", n_inputs)),
                 **categorical}
        self._add_missing_tests(win_missing, len(window), parts)
        tests = [t for name in self.columns_ for t in self._family(name, parts[name])]
        p = np.array([t.p_value for t in tests])
        share = self.shares_["inputs"]
        adjusted = np.minimum(1.0, _multitest.adjust(p, self.correction) / share)
        for t, a in zip(tests, adjusted):
            parts[t.feature].adjusted.append(float(a))
        family_p = _multitest.family_p_value(p, self.correction, self.combine) / share
        multivariate = self._multivariate_result(numeric)
        if multivariate is not None:
            family_p = min(family_p, multivariate.adjusted_p_value)
        outputs = self._output_results(window)
        family_p = min([1.0, family_p] + [r.adjusted_p_value for r in outputs.values()])
        features = {name: self._result(parts[name]) for name in self.columns_}
        return DriftReport(drift=bool(family_p <= self.alpha), p_value=family_p,
                           features=features, alpha=self.alpha, correction=self.correction,
                           combine=self.combine,
                           n_tests=len(tests) + (multivariate is not None) + len(outputs),
                           n_window=len(window), multivariate=multivariate, outputs=outputs)

    def _threshold(self, part: str, n_tests: int) -> float | None:
        """The raw p-value at or below which a test of ``part`` is rejected; None when
        the decision needs every exact p-value (BH, combinations)."""
        if self.exact_p_values or self.combine is not None or self.correction == "bh":
            return None
        share = self.alpha * self.shares_[part]
        return share / max(n_tests, 1) if self.correction == "bonferroni" else share

    def _count_tests(self, numeric: np.ndarray, categorical: dict[str, _Partial],
                     win_missing: dict[str, int]) -> int:
        """The size of the per-feature family, known before any numeric test is run."""
        with_values = int(np.count_nonzero((~np.isnan(numeric)).any(axis=0)))
        active = sum(part.active for part in categorical.values())
        missing = sum(self._ref_missing[c] + int(win_missing[c]) > 0 for c in self.columns_)
        return with_values + active + missing

    # -- the multivariate and model-output parts ----------------------------------

    def _ks_result(self, test: str, res: NumericComparison, i: int, adjusted: float) -> FeatureResult:
        return FeatureResult(
            test=test, statistic=float(res.statistic[i]), p_value=float(res.p_value[i]),
            drift=bool(adjusted <= self.alpha), adjusted_p_value=adjusted,
            effect_size=float(res.wasserstein[i]), effect_metric="wasserstein",
            n_reference=int(res.n_reference[i]), n_window=int(res.n_window[i]),
            exact=bool(res.exact[i]))

    def _multivariate_result(self, numeric: np.ndarray) -> FeatureResult | None:
        if self._multivariate is None:
            return None
        res = self._multivariate.compare(numeric, self._threshold("multivariate", 1))
        adjusted = min(1.0, float(res.p_value[0]) / self.shares_["multivariate"])
        return self._ks_result("ks (squared mahalanobis)", res, 0, adjusted)

    def _output_results(self, window: pd.DataFrame) -> dict[str, FeatureResult]:
        if self._outputs is None:
            return {}
        values, _ = _model_outputs(self.model, window, "window")
        threshold = self._threshold("outputs", len(self.outputs_))
        res = self._outputs.compare(values, None if threshold is None else
                                    np.full(len(self.outputs_), threshold))
        scale = len(self.outputs_) / self.shares_["outputs"]  # Bonferroni within the part
        return {name: self._ks_result("ks (model output)", res, i,
                                      min(1.0, float(res.p_value[i]) * scale))
                for i, name in enumerate(self.outputs_)}

    # -- per kind ---------------------------------------------------------------

    def _numeric_parts(self, matrix: np.ndarray, threshold: float | None) -> dict[str, _Partial]:
        if not self.numeric_:
            return {}
        res: NumericComparison = self._numeric.compare(
            matrix, None if threshold is None else np.full(len(self.numeric_), threshold))
        parts = {}
        for i, name in enumerate(self.numeric_):
            has = bool(res.n_window[i] > 0)
            parts[name] = _Partial(
                test="ks" if has else "ks (no values)",
                statistic=float(res.statistic[i]) if has else 0.0,
                p_value=float(res.p_value[i]) if has else 1.0,
                effect_size=float(res.wasserstein[i]), effect_metric="wasserstein",
                n_reference=int(res.n_reference[i]), n_window=int(res.n_window[i]), active=has,
                exact=bool(res.exact[i]))
        return parts

    def _categorical_parts(self, window: pd.DataFrame) -> dict[str, _Partial]:
        return {name: self._categorical_part(name, window[name]) for name in self.categorical_}

    def _categorical_part(self, name: str, values: pd.Series) -> _Partial:
        ref = self._categorical[name]
        ref_counts, win_counts, levels = ref.window_counts(values.to_numpy())
        strings = _holds_strings(values, levels)
        if strings is not None and strings != ref.string_levels:
            raise ValueError(f"column {name!r} changed type: reference levels are "
                             f"{'strings' if ref.string_levels else 'not strings'}, "
                             f"window has {values.dtype}")
        n_win = int(win_counts.sum())
        if n_win == 0:
            return _Partial("chi2 (no values)", 0.0, 1.0, float("nan"), "jensen_shannon",
                            int(ref_counts.sum()), 0, active=False)
        res = table_test(ref_counts, win_counts)
        return _Partial(res.test, res.statistic, res.p_value,
                        jensen_shannon(ref_counts, win_counts), "jensen_shannon",
                        int(ref_counts.sum()), n_win, active=res.table.shape[1] > 1)

    def _add_missing_tests(self, win_missing: dict[str, int], n_win: int,
                           parts: dict[str, _Partial]) -> None:
        for name in self.columns_:
            ref_m, win_m = self._ref_missing[name], int(win_missing[name])
            part = parts[name]
            part.missing_share_reference = ref_m / self.n_reference_
            part.missing_share_window = win_m / n_win
            if ref_m + win_m > 0:
                res = table_test(np.array([self.n_reference_ - ref_m, ref_m]),
                                 np.array([n_win - win_m, win_m]))
                part.missing_p_value = res.p_value

    @staticmethod
    def _family(name: str, part: _Partial) -> list[_Test]:
        tests = [_Test(name, False, part.p_value)] if part.active else []
        if part.missing_p_value is not None:
            tests.append(_Test(name, True, part.missing_p_value))
        return tests

    def _result(self, part: _Partial) -> FeatureResult:
        adjusted = min(part.adjusted, default=1.0)  # flags follow `correction` always
        return FeatureResult(
            test=part.test, statistic=part.statistic, p_value=part.p_value,
            drift=bool(adjusted <= self.alpha), adjusted_p_value=adjusted,
            effect_size=part.effect_size, effect_metric=part.effect_metric,
            missing_p_value=part.missing_p_value,
            missing_share_reference=part.missing_share_reference,
            missing_share_window=part.missing_share_window,
            n_reference=part.n_reference, n_window=part.n_window, exact=part.exact)


# ---------------------------------------------------------------- predictions and labels

class PredictionDriftDetector:
    """Drift of the model's outputs: a :class:`DriftDetector` on the prediction columns.

    ``reference`` is a 1-D array/Series of predictions (class labels or scores) or a
    DataFrame (e.g. one probability column per class). For 1-D input ``categorical``
    says whether predictions are labels (chi-squared) or scores (KS); ``None`` infers:
    floats are scores, integers, strings and bools are labels.

    Example:
        >>> import numpy as np
        >>> det = PredictionDriftDetector(np.array(["cat", "dog"] * 200))
        >>> det.test(np.array(["cat"] * 90 + ["dog"] * 10)).drift
        True
    """

    def __init__(self, reference: Any, *, alpha: float = 0.05, correction: str = "bonferroni",
                 categorical: bool | None = None) -> None:
        frame = self._frame(reference, "reference")
        if categorical is None:
            categorical = frame.shape[1] == 1 and not pd.api.types.is_float_dtype(frame.iloc[:, 0])
        names = list(frame.columns) if categorical else []
        self.detector = DriftDetector(frame, alpha=alpha, correction=correction,
                                      categorical=names)

    @staticmethod
    def _frame(values: Any, where: str) -> pd.DataFrame:
        if isinstance(values, pd.DataFrame):
            return values
        arr = pd.Series(np.asarray(values) if not isinstance(values, pd.Series) else values)
        if arr.ndim != 1:
            raise ValueError(f"{where} predictions must be 1-D or a DataFrame")
        return pd.DataFrame({"prediction": arr.reset_index(drop=True)})

    def test(self, predictions: Any) -> DriftReport:
        """Test one window of predictions (same shape as the reference)."""
        return self.detector.test(self._frame(predictions, "window"))


class PerformanceDriftDetector:
    """Accuracy drop once labels come back: one-sided Fisher exact test.

    The reference is a labelled sample (e.g. the validation set's predictions); the
    null is "window accuracy ≥ reference accuracy", tested with
    ``scipy.stats.fisher_exact(..., alternative="greater")`` on the 2 × 2 table of
    correct / wrong counts, exact at every window size. Rows whose label is missing
    (not back yet) are ignored.

    Example:
        >>> import pandas as pd
        >>> ref = pd.DataFrame({"label": [1] * 900 + [0] * 100, "prediction": [1] * 1000})
        >>> det = PerformanceDriftDetector(ref)
        >>> det.test(pd.DataFrame({"label": [1] * 60 + [0] * 40, "prediction": [1] * 100})).drift
        True
    """

    def __init__(self, reference: pd.DataFrame, *, alpha: float = 0.05, label: str = "label",
                 prediction: str = "prediction") -> None:
        _check_options(alpha, "none", None)
        self.alpha, self.label, self.prediction = float(alpha), label, prediction
        self.correct_, self.total_ = self._outcomes(reference, "reference")

    @classmethod
    def from_counts(cls, correct: int, total: int, *, alpha: float = 0.05,
                    label: str = "label", prediction: str = "prediction") -> PerformanceDriftDetector:
        """Build from the reference's number of correct predictions out of ``total``."""
        if not 0 <= correct <= total or total == 0:
            raise ValueError(f"need 0 <= correct <= total and total > 0, got {correct}/{total}")
        frame = pd.DataFrame({label: [1] * correct + [0] * (total - correct),
                              prediction: [1] * total})
        return cls(frame, alpha=alpha, label=label, prediction=prediction)

    def _outcomes(self, frame: pd.DataFrame, where: str) -> tuple[int, int]:
        for col in (self.label, self.prediction):
            if not isinstance(frame, pd.DataFrame) or col not in frame.columns:
                raise ValueError(f"{where} needs a column {col!r}")
        labelled = frame[frame[self.label].notna()]
        if labelled.empty:
            raise ValueError(f"{where} has no labelled rows in column {self.label!r}")
        correct = int((labelled[self.label] == labelled[self.prediction]).sum())
        return correct, len(labelled)

    def test(self, window: pd.DataFrame) -> DriftReport:
        """Test one labelled window; the report has one feature, ``"accuracy"``."""
        correct, total = self._outcomes(window, "window")
        report = self.test_counts(correct, total)
        return replace(report, n_window=len(window))

    def test_counts(self, correct: int, total: int) -> DriftReport:
        """Test a window given as its number of correct predictions out of ``total`` labelled rows.

        Example:
            >>> PerformanceDriftDetector.from_counts(900, 1000).test_counts(60, 100).drift
            True
        """
        if not 0 <= correct <= total or total == 0:
            raise ValueError(f"need 0 <= correct <= total and total > 0, got {correct}/{total}")
        table = [[self.correct_, self.total_ - self.correct_], [correct, total - correct]]
        p = float(stats.fisher_exact(table, alternative="greater").pvalue)
        ref_acc, win_acc = self.correct_ / self.total_, correct / total
        drift = p <= self.alpha
        feature = FeatureResult(test="fisher (one-sided: accuracy drop)",
                                statistic=win_acc - ref_acc, p_value=p, drift=drift,
                                adjusted_p_value=p, effect_size=ref_acc - win_acc,
                                effect_metric="accuracy_drop", n_reference=self.total_,
                                n_window=total)
        return DriftReport(drift=drift, p_value=p, features={"accuracy": feature},
                           alpha=self.alpha, correction="none", n_tests=1, n_window=total)


class ErrorDriftDetector:
    """Regression's accuracy test: are a window's absolute errors larger than the reference's?

    One-sided Mann–Whitney U (``scipy.stats.mannwhitneyu(window, reference,
    alternative="greater")``): the null is "a window error is not stochastically larger
    than a reference error". It needs no normality and is calibrated whatever the error
    distribution (exchangeable samples under the null). The reference holds the model's
    absolute errors on labeled rows it was not fitted on; rows without a label are ignored.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> det = ErrorDriftDetector(np.abs(rng.normal(size=400)))
        >>> det.test(np.abs(rng.normal(size=100))).drift, det.test(np.abs(rng.normal(scale=2, size=100))).drift
        (False, True)
    """

    def __init__(self, reference_errors: Any, *, alpha: float = 0.05) -> None:
        _check_options(alpha, "none", None)
        self.alpha = float(alpha)
        self.reference_ = self._errors(reference_errors, "reference")

    @staticmethod
    def _errors(values: Any, where: str) -> np.ndarray:
        errors = np.abs(np.asarray(values, dtype=float).ravel())
        errors = errors[np.isfinite(errors)]
        if errors.size == 0:
            raise ValueError(f"{where} has no finite errors")
        return errors

    def test(self, errors: Any) -> DriftReport:
        """Test one window's absolute errors; the report has one feature, ``"error"``."""
        window = self._errors(errors, "window")
        result = stats.mannwhitneyu(window, self.reference_, alternative="greater")
        p = float(result.pvalue)
        drift = p <= self.alpha
        auc = float(result.statistic) / (window.size * self.reference_.size)
        feature = FeatureResult(test="mannwhitneyu (one-sided: larger errors)", statistic=auc, p_value=p,
                                drift=drift, adjusted_p_value=p,
                                effect_size=float(window.mean() - self.reference_.mean()),
                                effect_metric="mae_increase", n_reference=int(self.reference_.size),
                                n_window=int(window.size))
        return DriftReport(drift=drift, p_value=p, features={"error": feature}, alpha=self.alpha,
                           correction="none", n_tests=1, n_window=int(window.size))


# ---------------------------------------------------------------- streaming

@dataclass(frozen=True)
class StreamVerdict:
    """One window's entry in a :class:`DriftStream` history."""

    index: int
    drift: bool
    alarm: bool
    p_value: float
    streak: int
    cooling_down: bool
    drifted_features: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_features"] = list(self.drifted_features)
        return out


class DriftStream:
    """Patience and cooldown over a stream of window verdicts.

    An alarm is raised when ``patience`` consecutive windows drift; the ``cooldown``
    windows after an alarm are recorded but cannot raise another (retraining is under
    way), and the streak restarts after them. ``detector`` is anything with
    ``test(window) -> DriftReport``; :meth:`observe` takes a report directly.
    The state (counters and the last ``max_history`` verdicts) round-trips through a
    plain dict with :meth:`to_state` / :meth:`from_state`, so an actor can checkpoint it.

    Example:
        >>> stream = DriftStream(None, patience=2, cooldown=1)
        >>> flags = [True, True, True, True, True]
        >>> [stream.observe(DriftReport(f, 0.0, {})).alarm for f in flags]
        [False, True, False, False, True]
    """

    def __init__(self, detector: Any, *, patience: int = 3, cooldown: int = 0,
                 max_history: int = 1000) -> None:
        for name, value, low in (("patience", patience, 1), ("cooldown", cooldown, 0),
                                 ("max_history", max_history, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.detector = detector
        self.patience, self.cooldown, self.max_history = patience, cooldown, max_history
        self.windows_seen = 0
        self.streak = 0
        self.cooldown_left = 0
        self.history: list[StreamVerdict] = []

    @property
    def drift_detected(self) -> bool:
        """Whether the last window raised an alarm."""
        return bool(self.history) and self.history[-1].alarm

    @property
    def alarms(self) -> list[int]:
        """Indices of the windows (in the kept history) that raised an alarm."""
        return [v.index for v in self.history if v.alarm]

    def update(self, window: Any) -> StreamVerdict:
        """Test ``window`` with the detector and record the verdict."""
        if self.detector is None:
            raise ValueError("detector is None: use observe(report) or pass a detector")
        return self.observe(self.detector.test(window))

    def observe(self, report: DriftReport) -> StreamVerdict:
        """Record a report computed elsewhere and apply patience and cooldown."""
        cooling = self.cooldown_left > 0
        alarm = False
        if cooling:
            self.cooldown_left -= 1
            self.streak = 0
        else:
            self.streak = self.streak + 1 if report.drift else 0
            alarm = self.streak >= self.patience
        verdict = StreamVerdict(self.windows_seen, bool(report.drift), alarm,
                                float(report.p_value), self.streak, cooling,
                                tuple(report.drifted_features))
        if alarm:
            self.streak, self.cooldown_left = 0, self.cooldown
        self.windows_seen += 1
        self.history = (self.history + [verdict])[-self.max_history:]
        return verdict

    def to_state(self) -> dict[str, Any]:
        """Counters, options and history as a plain (JSON-serializable) dict."""
        return {"patience": self.patience, "cooldown": self.cooldown,
                "max_history": self.max_history, "windows_seen": self.windows_seen,
                "streak": self.streak, "cooldown_left": self.cooldown_left,
                "history": [v.to_dict() for v in self.history]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], detector: Any = None) -> DriftStream:
        """Resume from :meth:`to_state` output (the detector is rebuilt by the caller)."""
        stream = cls(detector, patience=state["patience"], cooldown=state["cooldown"],
                     max_history=state["max_history"])
        stream.windows_seen = int(state["windows_seen"])
        stream.streak = int(state["streak"])
        stream.cooldown_left = int(state["cooldown_left"])
        stream.history = [StreamVerdict(**{**v, "drifted_features": tuple(v["drifted_features"])})
                          for v in state["history"]]
        return stream
