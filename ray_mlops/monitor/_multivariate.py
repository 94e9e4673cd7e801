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

from ray_mlops.monitor._ks import Located, NumericComparison, NumericReference, _take

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


class _FitRanks:
    """Mid-ranks in the fit part's ECDF, read off the whole reference's counts.

    The fit ECDF is the fit rows' values with a missing value at the fit median. A
    window value's count of fit values ``<=`` it is the count of fit rows among the
    reference values ``<=`` it (a prefix count over the sorted reference, so the one
    ``searchsorted`` of the KS test serves both), plus the imputed ones.
    """

    def __init__(self, reference: NumericReference, matrix: np.ndarray, fit: np.ndarray) -> None:
        median = np.nanmedian(np.where(fit[:, None], matrix, np.nan), axis=0)
        self.fill = np.where(np.isnan(median), 0.0, median)
        order = np.argsort(matrix, axis=0, kind="stable")  # NaN last, as in the reference
        counts = np.cumsum(fit[order], axis=0, dtype=np.int32).T  # int32: half the cache
        self.prefix = np.ascontiguousarray(
            np.concatenate([np.zeros((counts.shape[0], 1), dtype=np.int32), counts], axis=1))
        self.imputed = (np.isnan(matrix) & fit[:, None]).sum(axis=0)[:, None]
        self.n = n = int(fit.sum())
        # a mid-rank sum is an integer in [0, 2n]: its normal score is tabulated
        self.table = special.ndtri(np.clip(np.arange(2 * n + 1) / (2.0 * n), 0.5 / n, 1.0 - 0.5 / n))
        self.fill_rank = self._ranks(reference.locate(self.fill[None, :]))[:, :1]

    def _ranks(self, at: Located) -> np.ndarray:
        """left + right fit counts of each sorted window value (features × rows)."""
        right = _take(self.prefix, at.right)
        left = right if at.left is at.right else _take(self.prefix, at.left)
        if self.imputed.any():
            fill = self.fill[:, None]
            right = right + self.imputed * (fill <= at.sorted)
            left = left + self.imputed * (fill < at.sorted)
        return right + left

    def normal_scores(self, at: Located) -> np.ndarray:
        """Φ⁻¹ of each value's mid-rank, features × rows in the window's row order."""
        ranks = self._ranks(at)
        width = ranks.shape[1]
        if not (at.n_window == width).all():  # missing values: the fit median
            ranks = np.where(np.arange(width)[None, :] < at.n_window[:, None], ranks,
                             self.fill_rank)
        rows = np.empty_like(ranks)  # rows[f, order[f, k]] = ranks[f, k], one flat scatter
        rows.ravel()[at.order + (np.arange(len(ranks)) * width)[:, None]] = ranks
        return self.table[rows]


class _Score:
    """Normal scores and whitening learned from the fit rows.

    A value's normal score is Φ⁻¹ of its mid-rank in the fit ECDF (ties share one),
    kept inside (0.5/n, 1 - 0.5/n). (A transform tabulated on an even grid of the fit
    range was 8× faster but lost a tenth of the power on heavy-tailed features.)
    """

    def __init__(self, reference: NumericReference, matrix: np.ndarray, fit: np.ndarray) -> None:
        self.reference = reference
        self.ranks = _FitRanks(reference, matrix, fit)
        scores = self.ranks.normal_scores(reference.locate(matrix[fit])).T
        mean = scores.mean(axis=0)
        sd = scores.std(axis=0)
        self.keep = sd > 1e-9
        z = (scores[:, self.keep] - mean[self.keep]) / sd[self.keep]
        values, vectors = np.linalg.eigh(ledoit_wolf(z))
        floor = max(values.max(), 1.0) * 1e-9
        whiten = vectors / np.sqrt(np.maximum(values, floor))
        # the standardizing folded into the whitening (zero on dropped features)
        self.project = np.zeros((whiten.shape[1], len(sd)))
        self.project[:, self.keep] = (whiten / sd[self.keep, None]).T
        self.offset = (mean[self.keep] / sd[self.keep]) @ whiten

    @property
    def dimension(self) -> int:
        return int(self.keep.sum())

    def __call__(self, window: np.ndarray | Located) -> np.ndarray:
        """Squared Mahalanobis distance of every row's normal scores (NaN: the fit median)."""
        at = window if isinstance(window, Located) else self.reference.locate(window)
        y = self.project @ self.ranks.normal_scores(at) - self.offset[:, None]
        return np.einsum("ij,ij->j", y, y)


class MahalanobisTest:
    """The score fitted on part of ``matrix`` (rows × numeric features, NaN = missing).

    ``available`` is False when there are fewer than two non-constant features or too
    few rows for both parts; :meth:`compare` must then not be called.
    """

    def __init__(self, matrix: np.ndarray, reference: NumericReference | None = None) -> None:
        n = matrix.shape[0]
        fit = np.zeros(n, dtype=bool)
        n_fit = int(round(FIT_SHARE * n))
        fit[np.random.default_rng(SPLIT_SEED).permutation(n)[:n_fit]] = True
        self.n_fit, self.n_held_out = n_fit, n - n_fit
        self.available = (matrix.shape[1] >= 2 and min(n_fit, n - n_fit) >= MIN_ROWS)
        if not self.available:
            return
        self._score = _Score(reference or NumericReference(matrix), matrix, fit)
        self.available = self._score.dimension >= 2
        if self.available:
            held_out = self._score(matrix[~fit])
            self._reference = NumericReference(held_out[:, None])

    @property
    def dimension(self) -> int:
        """How many standardized features the score uses."""
        return self._score.dimension if self.available else 0

    def compare(self, window: np.ndarray | Located,
                threshold: float | None = None) -> NumericComparison:
        """KS of the window's scores against the held-out reference scores
        (``window``: rows × features or their ``locate`` in the whole reference;
        ``threshold``: the decision level, see ``NumericReference.compare``)."""
        thresholds = None if threshold is None else np.array([threshold])
        return self._reference.compare(self._score(window)[:, None], thresholds)
