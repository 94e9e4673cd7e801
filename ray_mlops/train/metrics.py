"""Evaluation metrics, one place for training, the promotion gate and the monitor.

Classification metrics take the predicted probability of every class (``predict_proba``
in the model's ``classes_`` order), so ints and strings work alike:

* binary (two classes): ``roc_auc``, ``log_loss``, ``accuracy`` and ``f1`` of the
  positive class (``classes[1]``) at a 0.5 threshold, plus ``macro_f1``;
* multi-class (three or more): ``accuracy`` and ``macro_f1`` of the most probable class,
  ``log_loss``, and ``roc_auc`` one-vs-rest (the macro mean over the classes that occur
  in ``y_true``; equal to scikit-learn's ``multi_class="ovr"`` when all of them occur).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

#: Metrics where larger is better; the rest are minimized.
HIGHER_IS_BETTER = {"roc_auc", "accuracy", "f1", "macro_f1", "r2"}
#: What each kind of task reports (``f1`` is the positive class's: binary only).
BINARY_METRICS = ("roc_auc", "log_loss", "accuracy", "f1", "macro_f1")
MULTICLASS_METRICS = ("roc_auc", "log_loss", "accuracy", "macro_f1")
CLASSIFICATION_METRICS = BINARY_METRICS
REGRESSION_METRICS = ("rmse", "mae", "r2")


def metric_names(task: str, n_classes: int = 2) -> tuple[str, ...]:
    """The metrics reported for ``task`` with ``n_classes`` label levels.

    >>> metric_names("classification", 3)
    ('roc_auc', 'log_loss', 'accuracy', 'macro_f1')
    """
    if task == "regression":
        return REGRESSION_METRICS
    return BINARY_METRICS if n_classes <= 2 else MULTICLASS_METRICS


def class_indices(y_true: Any, classes: Sequence[Any]) -> np.ndarray:
    """The position of each label in ``classes``; a ValueError names labels not among them."""
    lookup = {_key(c): i for i, c in enumerate(classes)}
    values = np.asarray(y_true, dtype=object).ravel()
    unknown = sorted({str(v) for v in values if _key(v) not in lookup})
    if unknown:
        raise ValueError(f"labels {unknown[:10]} are not among the classes {[_key(c) for c in classes][:10]}")
    return np.fromiter((lookup[_key(v)] for v in values), dtype=np.int64, count=len(values))


def _key(value: Any) -> Any:
    """A hashable label key where 1, 1.0 and np.int64(1) are the same class."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value if isinstance(value, str) else str(value)


def classification_metrics(y_true: Any, proba: Any, classes: Sequence[Any] | None = None,
                           threshold: float = 0.5) -> dict[str, float]:
    """Metrics of predicted probabilities ``proba`` against labels ``y_true``.

    ``proba`` is either the (n, k) matrix of ``predict_proba`` with ``classes`` its column
    labels (default ``0..k-1``), or, for a binary task, the positive-class column alone
    (``classes`` default ``[0, 1]``).

    >>> m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.6, 0.3]))
    >>> m["roc_auc"], m["accuracy"]
    (1.0, 1.0)
    >>> p = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.2, 0.2, 0.6]])
    >>> classification_metrics(["a", "b", "c"], p, classes=["a", "b", "c"])["macro_f1"]
    1.0
    """
    proba = np.asarray(proba, dtype=float)
    if proba.ndim == 1:
        return _binary(class_indices(y_true, [0, 1] if classes is None else classes), proba, threshold)
    classes = list(range(proba.shape[1])) if classes is None else list(classes)
    if proba.shape[1] != len(classes):
        raise ValueError(f"proba has {proba.shape[1]} columns for {len(classes)} classes")
    index = class_indices(y_true, classes)
    if len(classes) == 2:
        return _binary(index, proba[:, 1], threshold)
    return _multiclass(index, proba)


def _binary(positive: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    proba = np.clip(proba, 1e-15, 1 - 1e-15)
    predicted = (proba >= threshold).astype(int)
    both_classes = len(np.unique(positive)) == 2
    return {
        "roc_auc": float(skm.roc_auc_score(positive, proba)) if both_classes else float("nan"),
        "log_loss": float(skm.log_loss(positive, proba, labels=[0, 1])),
        "accuracy": float(skm.accuracy_score(positive, predicted)),
        "f1": float(skm.f1_score(positive, predicted, zero_division=0)),
        "macro_f1": float(skm.f1_score(positive, predicted, average="macro", zero_division=0)),
    }


def _multiclass(index: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    predicted = proba.argmax(axis=1)
    clipped = np.clip(proba, 1e-15, 1.0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    return {
        "roc_auc": ovr_roc_auc(index, proba),
        "log_loss": float(skm.log_loss(index, clipped, labels=list(range(proba.shape[1])))),
        "accuracy": float(skm.accuracy_score(index, predicted)),
        "macro_f1": float(skm.f1_score(index, predicted, average="macro", zero_division=0)),
    }


def ovr_roc_auc(index: np.ndarray, proba: np.ndarray) -> float:
    """Macro one-vs-rest ROC AUC over the classes present in ``index`` (NaN below two)."""
    present = np.unique(index)
    if len(present) < 2:
        return float("nan")
    return float(np.mean([skm.roc_auc_score(index == k, proba[:, k]) for k in present]))


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


__all__ = [
    "BINARY_METRICS",
    "CLASSIFICATION_METRICS",
    "HIGHER_IS_BETTER",
    "MULTICLASS_METRICS",
    "REGRESSION_METRICS",
    "class_indices",
    "classification_metrics",
    "is_better",
    "metric_names",
    "ovr_roc_auc",
    "regression_metrics",
]
