"""Tests once labels come back: accuracy drop (classification), larger errors (regression)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ray_mlops.monitor._columns import check_options
from ray_mlops.monitor._results import DriftReport, FeatureResult

__all__ = ["ErrorDriftDetector", "PerformanceDriftDetector"]


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
        check_options(alpha, "none", None)
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
        check_options(alpha, "none", None)
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
