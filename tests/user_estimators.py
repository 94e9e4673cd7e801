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
