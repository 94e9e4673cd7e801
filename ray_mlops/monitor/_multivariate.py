"""One multivariate two-sample test with an exact null: fit a score on part of the
reference, then KS-test the scores of the rest of the reference against the window's.

Per-feature tests miss a shift that moves many correlated features a little, or breaks
their correlations without moving any margin (noise on a sensor, a feature stuck at a
constant). The squared Mahalanobis distance of a row from the reference sees both. Real
features are skewed, heavy-tailed and tied, so the distance is taken between *normal
scores* (a Gaussian copula: each feature through its reference ECDF, mid-ranks for ties,
then the normal quantile), where correlations are measured robustly. Its null
distribution is still unknown, so it is not compared with a chi-squared: the reference
is split once, at construction, into a *fit* part (median imputation, the ECDFs, a
Ledoit–Wolf shrunk correlation of the normal scores) and a *held-out* part whose
scores are sorted once. A window's scores are then compared with the held-out
scores by the two-sample KS test (scipy's exact p-value). Under no drift the held-out
rows and the window rows are draws from one distribution and the score was fitted on
neither, so the p-value is valid whatever the features' dependence, their marginals
or ties (a conditional test given the fit part: no permutations, no asymptotics).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ray_mlops.monitor._ks import NumericComparison, NumericReference

__all__ = ["MahalanobisTest", "ledoit_wolf"]

#: Rows the fit part and the held-out part each need before the test is offered.
MIN_ROWS = 10
#: Share of the reference used to fit the score (the rest is held out).
FIT_SHARE = 0.5
#: The split is seeded: the same reference always gives the same detector.
SPLIT_SEED = 20191208


def ledoit_wolf(z: np.ndarray) -> np.ndarray:
    """Ledoit & Wolf's (2004) shrunk covariance of centred rows ``z`` (n × p)."""
    n, p = z.shape
    sample = z.T @ z / n
    mu = np.trace(sample) / p
    target = mu * np.eye(p)
    d2 = np.sum((sample - target) ** 2)
    b2 = np.sum((z ** 2).T @ (z ** 2)) / n ** 2 - np.sum(sample ** 2) / n
    shrink = 1.0 if d2 == 0 else float(np.clip(b2 / d2, 0.0, 1.0))
    return shrink * target + (1.0 - shrink) * sample


class _Score:
    """Median imputation, normal scores and whitening learned from the fit rows.

    A value's normal score is Φ⁻¹ of its mid-rank in the fit ECDF (ties share one),
    kept inside (0.5/n, 1 - 0.5/n). (A transform tabulated on an even grid of the fit
    range was 8× faster but lost a tenth of the power on heavy-tailed features.)
    """

    def __init__(self, fit: np.ndarray) -> None:
        median = np.nanmedian(fit, axis=0)
        self.fill = np.where(np.isnan(median), 0.0, median)
        filled = self._impute(fit)
        self.sorted = np.ascontiguousarray(np.sort(filled.T, axis=1))  # features × fit rows
        scores = self._normal_scores(filled)
        self.mean = scores.mean(axis=0)
        sd = scores.std(axis=0)
        self.keep = sd > 1e-9
        self.sd = sd[self.keep]
        z = (scores[:, self.keep] - self.mean[self.keep]) / self.sd
        values, vectors = np.linalg.eigh(ledoit_wolf(z))
        floor = max(values.max(), 1.0) * 1e-9
        self.whiten = vectors / np.sqrt(np.maximum(values, floor))

    @property
    def dimension(self) -> int:
        return int(self.keep.sum())

    def _impute(self, matrix: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(matrix), self.fill, matrix)

    def _normal_scores(self, filled: np.ndarray) -> np.ndarray:
        n = self.sorted.shape[1]
        columns = np.ascontiguousarray(filled.T)
        order = np.argsort(columns, axis=1)  # sorted queries: cache-friendly lookups
        ranks = np.empty(columns.shape)
        for j, ordered in enumerate(self.sorted):
            values = columns[j, order[j]]
            right = np.searchsorted(ordered, values, side="right")
            left = right.copy()
            tied = ordered[right - 1] == values  # right == 0: ordered[-1] > value, not tied
            if tied.any():  # only tied values need the second search
                left[tied] = np.searchsorted(ordered, values[tied], side="left")
            ranks[j, order[j]] = left + right
        return special.ndtri(np.clip(ranks.T / (2.0 * n), 0.5 / n, 1.0 - 0.5 / n))

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of every row's normal scores (NaN: the fit median)."""
        scores = self._normal_scores(self._impute(matrix))
        z = (scores[:, self.keep] - self.mean[self.keep]) / self.sd
        return np.sum((z @ self.whiten) ** 2, axis=1)


class MahalanobisTest:
    """The score fitted on part of ``matrix`` (rows × numeric features, NaN = missing).

    ``available`` is False when there are fewer than two non-constant features or too
    few rows for both parts; :meth:`compare` must then not be called.
    """

    def __init__(self, matrix: np.ndarray) -> None:
        n = matrix.shape[0]
        order = np.random.default_rng(SPLIT_SEED).permutation(n)
        n_fit = int(round(FIT_SHARE * n))
        self.n_fit, self.n_held_out = n_fit, n - n_fit
        self.available = (matrix.shape[1] >= 2 and min(n_fit, n - n_fit) >= MIN_ROWS)
        if not self.available:
            return
        self._score = _Score(matrix[order[:n_fit]])
        self.available = self._score.dimension >= 2
        if self.available:
            held_out = self._score(matrix[order[n_fit:]])
            self._reference = NumericReference(held_out[:, None])

    @property
    def dimension(self) -> int:
        """How many standardized features the score uses."""
        return self._score.dimension if self.available else 0

    def compare(self, window: np.ndarray, threshold: float | None = None) -> NumericComparison:
        """KS of the window's scores against the held-out reference scores
        (``threshold``: the decision level, see ``NumericReference.compare``)."""
        thresholds = None if threshold is None else np.array([threshold])
        return self._reference.compare(self._score(window)[:, None], thresholds)
