"""Evaluation metrics, one place for training, the promotion gate and the monitor."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

#: Metrics where larger is better; the rest are minimized.
HIGHER_IS_BETTER = {"roc_auc", "accuracy", "f1", "r2"}


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC AUC, log loss, accuracy and F1 of positive-class probabilities ``proba``.

    >>> m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.6, 0.3]))
    >>> m["roc_auc"], m["accuracy"]
    (1.0, 1.0)
    """
    y_true = np.asarray(y_true).astype(int)
    proba = np.clip(np.asarray(proba, dtype=float), 1e-15, 1 - 1e-15)
    predicted = (proba >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "roc_auc": float(skm.roc_auc_score(y_true, proba)) if both_classes else float("nan"),
        "log_loss": float(skm.log_loss(y_true, proba, labels=[0, 1])),
        "accuracy": float(skm.accuracy_score(y_true, predicted)),
        "f1": float(skm.f1_score(y_true, predicted, zero_division=0)),
    }


def regression_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² of numeric predictions."""
    y_true = np.asarray(y_true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y_true, predicted))),
        "mae": float(skm.mean_absolute_error(y_true, predicted)),
        "r2": float(skm.r2_score(y_true, predicted)),
    }


def is_better(candidate: float, incumbent: float, metric: str, tolerance: float = 0.0) -> bool:
    """True when ``candidate`` is at least as good as ``incumbent`` within ``tolerance``."""
    if metric in HIGHER_IS_BETTER:
        return candidate >= incumbent - tolerance
    return candidate <= incumbent + tolerance


__all__ = ["classification_metrics", "regression_metrics", "is_better", "HIGHER_IS_BETTER"]
