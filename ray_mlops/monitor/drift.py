"""Drift statistics: calibrated, vectorized tests of a window against a reference.

Pure numpy/scipy/pandas (no Ray), so the monitor actor, the retraining gate and the
tests all use the same code.

* :class:`DriftDetector` — input (feature) drift. Numeric features: two-sample
  Kolmogorov–Smirnov, decisions equal to ``scipy.stats.ks_2samp``'s (default ``auto``
  method; p-values equal too unless flagged ``exact=False``, far from the threshold);
  categorical features: chi-squared on level counts (levels unseen in the
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

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ray_mlops.monitor._columns import (
    check_options,
    check_reference,
    check_window_frame,
    infer_kinds,
    model_outputs,
    numeric_matrix,
)
from ray_mlops.monitor._features import FeatureTests, Level
from ray_mlops.monitor._ks import Located, NumericComparison, NumericReference
from ray_mlops.monitor._multivariate import MahalanobisTest
from ray_mlops.monitor._performance import ErrorDriftDetector, PerformanceDriftDetector
from ray_mlops.monitor._results import DriftReport, FeatureResult
from ray_mlops.monitor._stream import DriftStream, StreamVerdict

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

#: Shares of α for the parts of a window's family, normalised over the parts a detector
#: has: the per-feature tests, the multivariate test, the model's outputs, the
#: point-mass tests (small: a knockout gives p-values far below any level). Whatever the
#: shares, a part at level ``share · α`` and the union over parts keep the window's
#: false-alarm rate at most α (Bonferroni across parts, valid under any dependence).
SHARES = {"inputs": 0.5, "multivariate": 0.5, "outputs": 0.5, "point_mass": 0.1}


def _ks_result(test: str, res: NumericComparison, i: int, adjusted: float,
               alpha: float) -> FeatureResult:
    return FeatureResult(
        test=test, statistic=float(res.statistic[i]), p_value=float(res.p_value[i]),
        drift=bool(adjusted <= alpha), adjusted_p_value=adjusted,
        effect_size=float(res.wasserstein[i]), effect_metric="wasserstein",
        n_reference=int(res.n_reference[i]), n_window=int(res.n_window[i]),
        exact=bool(res.exact[i]))


def _multivariate_or_none(matrix: np.ndarray, reference: NumericReference,
                          wanted: bool) -> MahalanobisTest | None:
    test = MahalanobisTest(matrix, reference) if wanted else None
    return test if test is not None and test.available else None


class DriftDetector:
    """Test windows of production data against a reference sample.

    The family of one window has up to four parts, each given a share of α
    (:data:`SHARES`): the per-feature tests (KS, chi-squared, missing share, combined by
    ``correction``), the point-mass tests of numeric features (a value become far more
    frequent, e.g. a feature stuck at a default; Bonferroni, see ``_pointmass``), one
    multivariate test (the squared Mahalanobis distance of the rows, KS-tested against
    held-out reference rows, see ``_multivariate``) and, when a ``model`` is given, KS
    tests of its predicted probabilities (black-box shift detection). The window
    drifts when any part rejects at its share.

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
        point_mass: add, per numeric feature, the point-mass test (default; see
            ``_pointmass``): exact, it sees a feature stuck at one value in part of the
            rows (a knockout), which KS sees at half strength. It is in the family only
            when a value repeats in reference and window together.
        exact_p_values: False (default): every decision is the one scipy's exact KS
            p-value gives, but on large samples (both sizes >= 500) a p-value more than
            a factor 2 from its decision threshold is Stephens' asymptotic one, within
            1.25x of scipy's (``FeatureResult.exact`` is False; see ``_ks``): 10-20x
            faster from the first window. True reports scipy's p-value for every test.

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
                 model: Any = None, exact_p_values: bool = False,
                 point_mass: bool = True) -> None:
        check_options(alpha, correction, combine)
        missing = check_reference(reference)
        self.alpha, self.correction, self.combine = float(alpha), correction, combine
        self.exact_p_values = exact_p_values
        self.kinds_ = infer_kinds(reference, categorical)
        self.columns_ = list(reference.columns)
        self.n_reference_ = len(reference)
        matrix = numeric_matrix(reference, [c for c in self.columns_
                                            if self.kinds_[c] == "numeric"], "reference")
        self._features = FeatureTests(reference, self.kinds_, matrix, missing, point_mass)
        self.numeric_ = self._features.numeric_names
        self.categorical_ = self._features.categorical_names
        self._multivariate = _multivariate_or_none(matrix, self._features.numeric, multivariate)
        self.model, self._outputs, self.outputs_ = model, None, []
        if model is not None:
            values, self.outputs_ = model_outputs(model, reference, "reference")
            self._outputs = NumericReference(values)
        present = ["inputs"] + ["multivariate"] * (self._multivariate is not None) + [
            "outputs"] * (model is not None) + ["point_mass"] * (
            point_mass and bool(self.numeric_))
        total = sum(SHARES[p] for p in present)
        self.shares_ = {p: SHARES[p] / total for p in present}

    def test(self, window: pd.DataFrame) -> DriftReport:
        """Test one window (same columns as the reference) and return a DriftReport.

        Raises:
            ValueError: empty window, missing or extra columns, or a column whose
                type changed (the message names it).
        """
        names = check_window_frame(window, self.columns_)
        located = self._features.numeric.locate(
            numeric_matrix(window, self.numeric_, "window", names))
        inputs = self._features.test(window, located, self._level("inputs"))
        multivariate = self._multivariate_result(located)
        outputs = self._output_results(window)
        family_p = min([inputs.p_value] + [r.adjusted_p_value for r in outputs.values()] + (
            [] if multivariate is None else [multivariate.adjusted_p_value]))
        return DriftReport(drift=bool(family_p <= self.alpha), p_value=family_p,
                           features=inputs.features, alpha=self.alpha,
                           correction=self.correction, combine=self.combine,
                           n_tests=inputs.n_tests + (multivariate is not None) + len(outputs),
                           n_window=len(window), multivariate=multivariate, outputs=outputs)

    def _level(self, part: str) -> Level:
        """How ``part`` is decided: the inputs by ``correction`` / ``combine``, the
        multivariate and output parts by Bonferroni at their shares."""
        if part == "inputs":
            return Level(self.alpha, self.correction, self.combine, self.shares_[part],
                         not self.exact_p_values, self.shares_.get("point_mass", 0.0))
        return Level(self.alpha, "bonferroni", None, self.shares_[part], not self.exact_p_values)

    def _multivariate_result(self, located: Located) -> FeatureResult | None:
        if self._multivariate is None:
            return None
        res = self._multivariate.compare(located, self._level("multivariate").threshold(1))
        adjusted = min(1.0, float(res.p_value[0]) / self.shares_["multivariate"])
        return _ks_result("ks (squared mahalanobis)", res, 0, adjusted, self.alpha)

    def _output_results(self, window: pd.DataFrame) -> dict[str, FeatureResult]:
        if self._outputs is None:
            return {}
        values, _ = model_outputs(self.model, window, "window")
        threshold = self._level("outputs").threshold(len(self.outputs_))
        res = self._outputs.compare(values, None if threshold is None else
                                    np.full(len(self.outputs_), threshold))
        scale = len(self.outputs_) / self.shares_["outputs"]  # Bonferroni within the part
        return {name: _ks_result("ks (model output)", res, i,
                                 min(1.0, float(res.p_value[i]) * scale), self.alpha)
                for i, name in enumerate(self.outputs_)}


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
