"""A user's own estimator, as a project would ship it (importable by Ray workers: tests/ is on their sys.path)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin


class CentroidCounts:
    """A plain helper object kept in the fitted state: a type the registry must be told to trust."""

    def __init__(self, counts: np.ndarray):
        self.counts = counts


class SoftCentroidClassifier(ClassifierMixin, BaseEstimator):
    """Nearest-centroid with a softmax over negative squared distances (dense input only)."""

    def __init__(self, temperature: float = 1.0):
        self.temperature = temperature

    def fit(self, X, y):
        X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=float)
        self.classes_, index = np.unique(np.asarray(y), return_inverse=True)
        self.centroids_ = np.stack([X[index == k].mean(axis=0) for k in range(len(self.classes_))])
        self.counts_ = CentroidCounts(np.bincount(index))
        return self

    def predict_proba(self, X):
        X = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=float)
        distance = ((X[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        logits = -distance / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class NotAnEstimator:
    """Has no fit: naming it as a family's estimator is a clear error."""


class FailsOnRows(ClassifierMixin, BaseEstimator):
    """A logistic regression that raises whenever it is asked about exactly ``fail_rows`` rows.

    It passes a version's warm-up (64 rows), so it loads, and fails on chosen requests: a
    shadow version that raises on a batch.
    """

    def __init__(self, fail_rows: int = 3):
        self.fail_rows = fail_rows

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression

        self.model_ = LogisticRegression(max_iter=500).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X):
        if X.shape[0] == self.fail_rows:
            raise RuntimeError(f"refusing {self.fail_rows} rows")
        return self.model_.predict_proba(X)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
