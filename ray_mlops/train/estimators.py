"""The estimator of a model family: a built-in shortcut, or any scikit-learn estimator by import path.

A family in ``train.families`` is either named after a built-in (``logistic_regression``,
``hist_gradient_boosting``, ``random_forest`` for classification; ``ridge``,
``hist_gradient_boosting``, ``random_forest`` for regression) or names its estimator:
``estimator: sklearn.svm.SVC`` (or a user's own class, importable wherever training and
serving run). Every estimator gets ``random_state=<seed>`` and ``n_jobs=1`` when it has
those parameters and the config does not set them (a trial owns one CPU).

A classifier without ``predict_proba`` (``SVC`` without ``probability``, ``LinearSVC``,
``RidgeClassifier``) is wrapped in ``CalibratedClassifierCV(method="sigmoid", cv=3)``:
plain scikit-learn, and the gate, the log loss and ``/predict`` need probabilities. Its
own parameters are then ``model__estimator__<param>`` as ``Pipeline`` paths.

>>> build_estimator("classification", "svm", {"C": 2.0}, seed=0, path="sklearn.svm.SVC").estimator.C
2.0
>>> accepts_sparse(build_estimator("classification", "hist_gradient_boosting", {}, seed=0))
False
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from sklearn.base import BaseEstimator, is_classifier, is_regressor
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.utils import get_tags

from ray_mlops.errors import TrainError

#: cv folds of the calibration wrapper of a classifier without predict_proba.
CALIBRATION_FOLDS = 3


@dataclass(frozen=True)
class Builtin:
    """A built-in family: its class and the defaults beneath the config's parameters."""

    cls: type
    defaults: dict[str, Any] = field(default_factory=dict)


BUILTINS: dict[str, dict[str, Builtin]] = {
    "classification": {
        "logistic_regression": Builtin(LogisticRegression, {"max_iter": 1000}),
        "hist_gradient_boosting": Builtin(HistGradientBoostingClassifier, {"early_stopping": False}),
        "random_forest": Builtin(RandomForestClassifier, {"n_jobs": 1}),
    },
    "regression": {
        "ridge": Builtin(Ridge),
        "hist_gradient_boosting": Builtin(HistGradientBoostingRegressor, {"early_stopping": False}),
        "random_forest": Builtin(RandomForestRegressor, {"n_jobs": 1}),
    },
}


def families(task: str) -> list[str]:
    """The built-in family names for ``task`` ("classification" or "regression")."""
    return sorted(BUILTINS.get(task, {}))


def import_estimator(path: str, family: str) -> type:
    """The class at import path ``path``; a :class:`TrainError` naming the family if it is none."""
    where = f"train.families.{family}.estimator {path!r}"
    module_name, _, attr = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises on import
        raise TrainError(f"{where} cannot be imported: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(obj, type) and callable(getattr(obj, "fit", None)) and callable(getattr(obj, "get_params", None))):
        raise TrainError(f"{where} is not a scikit-learn estimator (a class with fit and get_params)")
    return obj


def estimator_class(task: str, family: str, path: str | None = None) -> tuple[type, dict[str, Any]]:
    """(class, default params) of a family: ``path`` when given, else the built-in ``family``."""
    if task not in BUILTINS:
        raise TrainError(f"unknown task {task!r}; expected one of {sorted(BUILTINS)}")
    if path is not None:
        return import_estimator(path, family), {}
    if family not in BUILTINS[task]:
        hint = " (logistic_regression is for classification; use ridge)" if task == "regression" else ""
        raise TrainError(
            f"train.families: unknown model family {family!r} for {task}; use a built-in one "
            f"({', '.join(families(task))}){hint} or give it an `estimator:` import path")
    builtin = BUILTINS[task][family]
    return builtin.cls, dict(builtin.defaults)


def declared_types(task: str, family: str, path: str | None, trusted: list[str]) -> list[str]:
    """Types the registry may trust for this family: ``trusted`` plus a non-sklearn estimator class."""
    cls, _ = estimator_class(task, family, path)
    own = [] if cls.__module__.split(".")[0] == "sklearn" else [f"{cls.__module__}.{cls.__qualname__}"]
    return sorted({*trusted, *own})


def _with_runtime_defaults(cls: type, params: dict[str, Any], seed: int, one_job: bool) -> dict[str, Any]:
    """``params`` plus ``random_state=seed`` (and ``n_jobs=1`` if ``one_job``) where the class takes them and they are unset."""
    try:
        accepted = set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):  # no introspectable signature: add nothing
        accepted = set()
    extra = {"random_state": seed, **({"n_jobs": 1} if one_job else {})}
    return {**{k: v for k, v in extra.items() if k in accepted and k not in params}, **params}


def _check_kind(estimator: Any, task: str, family: str) -> None:
    ok = is_classifier(estimator) if task == "classification" else is_regressor(estimator)
    if not ok:
        mixin = "ClassifierMixin" if task == "classification" else "RegressorMixin"
        raise TrainError(
            f"train.families.{family}: {type(estimator).__name__} is not a "
            f"{'classifier' if task == 'classification' else 'regressor'} (task: {task}); "
            f"a custom class derives from sklearn.base.{mixin}")


def build_estimator(task: str, family: str, params: dict[str, Any], seed: int, path: str | None = None) -> BaseEstimator:
    """The bare estimator of ``family`` (or of the class at ``path``) with ``params``.

    A :class:`TrainError` names a bad family, import path, parameter or estimator kind.
    """
    cls, defaults = estimator_class(task, family, path)
    merged = _with_runtime_defaults(cls, {**defaults, **params}, seed, one_job=path is not None)
    try:
        estimator = cls(**merged)
    except TypeError as exc:
        raise TrainError(f"family {family!r}: bad parameters {sorted(params)}: {exc}") from exc
    _check_kind(estimator, task, family)
    if task == "classification" and not hasattr(estimator, "predict_proba"):
        return CalibratedClassifierCV(estimator, method="sigmoid", cv=CALIBRATION_FOLDS)
    return estimator


def inner_estimator(estimator: Any) -> Any:
    """The estimator itself, or the one inside the calibration wrapper."""
    return estimator.estimator if isinstance(estimator, CalibratedClassifierCV) else estimator


def accepts_sparse(estimator: Any) -> bool:
    """Whether the estimator takes sparse input, by its scikit-learn tags (False when unknown)."""
    try:
        return bool(get_tags(inner_estimator(estimator)).input_tags.sparse)
    except Exception:  # not a tagged scikit-learn estimator: assume it needs dense input
        return False


def is_iterative(estimator: Any) -> bool:
    """Grown in stages with ``warm_start`` (and reported per stage): gradient boosting without early stopping."""
    hgb = (HistGradientBoostingClassifier, HistGradientBoostingRegressor)
    return isinstance(estimator, hgb) and estimator.early_stopping is False


__all__ = [
    "BUILTINS",
    "CALIBRATION_FOLDS",
    "accepts_sparse",
    "build_estimator",
    "declared_types",
    "estimator_class",
    "families",
    "import_estimator",
    "inner_estimator",
    "is_iterative",
]
