"""The promotion gate: a candidate becomes ``production`` only through a recorded paired test.

:func:`gate_and_promote` points the ``candidate`` alias at a registered version, smoke-tests
it as loaded from the registry, predicts with it and with the current production model on
the *same* held-out rows, and runs a paired test (:mod:`ray_mlops.gate_stats`: exact
McNemar or Tango's score test for accuracy, paired DeLong for binary ROC AUC, a seeded
paired bootstrap otherwise). It promotes when the candidate is significantly non-inferior
(within ``gate.margin``) or, with ``gate.require: superior``, significantly better, at the
one-sided level ``gate.alpha``. With no production model yet (or one that cannot score the
holdout), the candidate must be significantly better than a trivial baseline (the class
prior or the mean). Every decision, with its scores and the test's estimate, interval,
p-value and row count, goes to the registry's event log.

Classification may be binary or multi-class, with int or str labels: each model is scored
with its own ``classes_`` (its ``predict_proba`` columns, reordered to the candidate's for
the paired test), so a model that cannot place a holdout label fails the smoke test
(candidate) or cannot be scored (production).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ray_mlops.config import GateConfig
from ray_mlops.data.schema import FeatureSchema
from ray_mlops.errors import ConfigError, DataError, RegistryError
from ray_mlops.gate_stats import PairedTest, paired_test
from ray_mlops.registry import Registry
from ray_mlops.train.metrics import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    class_indices,
    classification_metrics,
    metric_names,
    regression_metrics,
)
from ray_mlops.train.pipelines import label_values
SMOKE_ROWS = 256


@dataclass(frozen=True)
class SmokeTest:
    """Did the candidate load from the registry and predict sane outputs on a sample?"""

    passed: bool
    detail: str
    rows: int


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one pass through the gate (also written to the event log)."""

    promoted: bool
    reason: str
    metric: str
    mode: str
    candidate_version: str
    production_version: str | None
    candidate_score: float | None
    production_score: float | None
    baseline_score: float | None
    smoke_test: SmokeTest
    require: str = "non_inferior"
    test: PairedTest | None = None  # None when no comparison ran (smoke test failed, NaN, already production)
    compared_with: str | None = None  # "production" or "baseline" (no production, or one that cannot score)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (the paired test as :meth:`PairedTest.to_json`)."""
        return {**asdict(self), "test": self.test.to_json() if self.test else None}


# -- metric choice -------------------------------------------------------------------
def gate_metric(schema: FeatureSchema, gate: GateConfig) -> tuple[str, str]:
    """The (metric, mode) the gate compares with, checked against the task.

    A regression task whose gate names a classification metric (the default ``roc_auc``)
    is judged on ``rmse`` (lower is better).
    """
    if schema.task == "regression" and gate.metric in CLASSIFICATION_METRICS:
        return "rmse", "min"
    known = CLASSIFICATION_METRICS if schema.task == "classification" else REGRESSION_METRICS
    if gate.metric not in known:
        raise ConfigError(f"gate.metric {gate.metric!r} is not a {schema.task} metric; use one of {', '.join(known)}")
    natural = "max" if gate.metric in HIGHER_IS_BETTER else "min"
    if gate.mode != natural:
        raise ConfigError(f"gate.mode {gate.mode!r} contradicts gate.metric {gate.metric!r} ({natural} is better)")
    return gate.metric, gate.mode


def _check_metric_for_classes(metric: str, y: np.ndarray, task: str) -> None:
    """``f1`` (the positive class's) needs two classes; a ConfigError says what to use."""
    levels = len(pd.unique(y)) if task == "classification" else 0
    if levels > 2 and metric not in metric_names(task, levels):
        raise ConfigError(f"gate.metric {metric!r} is for two classes; the holdout has {levels} classes: "
                          f"use one of {', '.join(metric_names(task, levels))}")


# -- holdout, scoring ----------------------------------------------------------------
def split_holdout(holdout: pd.DataFrame, schema: FeatureSchema) -> tuple[pd.DataFrame, np.ndarray]:
    """Features and label of ``holdout``; a :class:`DataError` naming what is missing."""
    missing = [c for c in [*schema.features, schema.label] if c not in holdout.columns]
    if missing:
        raise DataError(f"holdout lacks columns: {', '.join(missing)}")
    if holdout.empty:
        raise DataError("holdout is empty")
    y = holdout[schema.label]
    if y.isna().any():
        raise DataError(f"holdout label {schema.label!r} has {int(y.isna().sum())} missing values")
    return holdout[list(schema.features)], label_values(y, schema.task)


def model_classes(model: Any) -> list[Any]:
    """A classifier's labels in ``predict_proba`` column order."""
    return list(getattr(model, "classes_", []))


def predictions(model: Any, X: pd.DataFrame, task: str) -> np.ndarray:
    """Class probabilities, one column per ``classes_`` (classification), or predicted values."""
    if task == "classification":
        return np.asarray(model.predict_proba(X), dtype=float)
    return np.asarray(model.predict(X), dtype=float)


def score(values: np.ndarray, y: np.ndarray, task: str, metric: str, classes: list[Any] | None = None) -> float:
    """``metric`` of ``values`` (probabilities in ``classes`` order, or predictions) against ``y``."""
    if task == "classification":
        return classification_metrics(y, values, classes)[metric]
    return regression_metrics(y, values)[metric]


def baseline_values(y: np.ndarray, task: str, classes: list[Any] | None = None) -> np.ndarray:
    """A trivial predictor: the class prior over ``classes`` (classification) or the mean.

    It is fitted on the holdout itself, which flatters the baseline: a conservative gate.
    """
    if task != "classification":
        return np.full(len(y), float(np.mean(y)))
    classes = sorted(pd.unique(y).tolist()) if classes is None else classes
    prior = np.bincount(class_indices(y, classes), minlength=len(classes)) / len(y)
    return np.tile(prior, (len(y), 1))


# -- smoke test ----------------------------------------------------------------------
def _unknown_labels(model: Any, labels: np.ndarray | None) -> str | None:
    """A problem when the holdout has labels the classifier cannot predict, else None."""
    if labels is None:
        return None
    classes = model_classes(model)
    try:
        class_indices(labels, classes)
    except ValueError as exc:
        return f"the model cannot predict every holdout label: {exc}"
    return None


def _check_outputs(model: Any, X: pd.DataFrame, task: str, labels: np.ndarray | None = None) -> str | None:
    """What is wrong with the model's outputs on ``X`` (and its classes for ``labels``), or None."""
    predicted = np.asarray(model.predict(X))
    if predicted.shape != (len(X),):
        return f"predict returned shape {predicted.shape}, expected ({len(X)},)"
    if task == "regression":
        return None if np.isfinite(predicted.astype(float)).all() else "predict returned non-finite values"
    classes = model_classes(model)
    if len(classes) < 2:
        return f"the classifier has {len(classes)} classes_, expected at least 2"
    proba = np.asarray(model.predict_proba(X), dtype=float)
    if proba.shape != (len(X), len(classes)):
        return f"predict_proba returned shape {proba.shape}, expected ({len(X)}, {len(classes)})"
    if not np.isfinite(proba).all() or proba.min() < 0 or proba.max() > 1:
        return "predict_proba returned values outside [0, 1]"
    if not np.allclose(proba.sum(axis=1), 1.0, atol=1e-6):
        return "predict_proba rows do not sum to 1"
    return _unknown_labels(model, labels)


def smoke_test(registry: Registry, ref: str, X: pd.DataFrame, task: str, *, rows: int = SMOKE_ROWS,
               seed: int = 0, labels: np.ndarray | None = None) -> tuple[SmokeTest, Any]:
    """Load ``ref`` from the registry and predict on a sample; returns (result, model or None).

    With ``labels`` (the holdout's), a classifier must also know every one of them.
    """
    sample = X.sample(n=min(rows, len(X)), random_state=seed)
    try:
        model = registry.load(ref)
    except RegistryError as exc:
        return SmokeTest(False, f"cannot load from the registry: {exc}", 0), None
    try:
        problem = _check_outputs(model, sample, task, labels)
    except Exception as exc:  # any failure to predict fails the test; the gate records it
        problem = f"prediction raised {type(exc).__name__}: {exc}"
    if problem:
        return SmokeTest(False, problem, len(sample)), None
    return SmokeTest(True, "loaded and predicted", len(sample)), model


# -- the gate ------------------------------------------------------------------------
def _aligned(proba: np.ndarray, columns: list[Any], classes: list[Any] | None) -> np.ndarray:
    """``proba`` (columns in ``columns`` order) reordered to ``classes``; a ValueError if one is missing."""
    if not classes or not columns or columns == classes:
        return proba
    return proba[:, class_indices(classes, columns)]


def _production_values(registry: Registry, production: str, X: pd.DataFrame, task: str,
                       classes: list[Any] | None) -> tuple[np.ndarray | None, str]:
    """Production's predictions on the holdout (in the candidate's class order); (None, why) if it cannot."""
    try:
        model = registry.load(production)
        return _aligned(predictions(model, X, task), model_classes(model), classes), ""
    except RegistryError as exc:
        return None, f"production {production} cannot be loaded ({exc})"
    except Exception as exc:  # e.g. a production model built for another schema or other classes
        return None, f"production {production} cannot score this holdout ({type(exc).__name__}: {exc})"


def _test(y: np.ndarray, reference: np.ndarray, candidate: np.ndarray, *, metric: str, gate: GateConfig,
          require: str, classes: list[Any] | None) -> PairedTest:
    return paired_test(y, reference, candidate, metric=metric, margin=gate.margin, alpha=gate.alpha,
                       require=require, classes=classes, seed=gate.seed)


def _reason(test: PairedTest, against: str, note: str) -> str:
    """The decision in words, with the test's figures."""
    prefix = f"{note}; " if note else ""
    if against == "baseline":
        verdict = "beats the baseline significantly" if test.passed else "does not beat the baseline significantly"
    else:
        shown = "superior" if test.require == "superior" else "non-inferior"
        verdict = f"{'is' if test.passed else 'is not shown'} {shown} to {against}"
    return f"{prefix}candidate {verdict}: {test.describe()}"


def _compare(registry: Registry, production: str | None, X: pd.DataFrame, y: np.ndarray, values: np.ndarray,
             baseline: np.ndarray, *, metric: str, task: str, gate: GateConfig,
             classes: list[Any] | None) -> tuple[PairedTest, str, float | None]:
    """The paired test against production (or, without a scorable one, the baseline); reason; its score."""
    prod, note = (None, "") if production is None else _production_values(registry, production, X, task, classes)
    prod_score = None if prod is None else score(prod, y, task, metric, classes)
    if prod_score is not None and math.isnan(prod_score):
        prod, prod_score, note = None, None, f"production {production} scores NaN on {metric}"
    if prod is None:
        test = _test(y, baseline, values, metric=metric, gate=gate, require="superior", classes=classes)
        return test, _reason(test, "baseline", note), None
    test = _test(y, prod, values, metric=metric, gate=gate, require=gate.require, classes=classes)
    return test, _reason(test, f"production {production}", ""), prod_score


def _decide(registry: Registry, candidate: str, X: pd.DataFrame, y: np.ndarray, model: Any,
            schema: FeatureSchema, gate: GateConfig, smoke: SmokeTest) -> GateDecision:
    metric, mode = gate_metric(schema, gate)
    production = registry.get_alias("production")
    classes = (model_classes(model) if smoke.passed else sorted(pd.unique(y).tolist())) or None
    baseline = baseline_values(y, schema.task, classes)
    decision = dict(metric=metric, mode=mode, require=gate.require, candidate_version=candidate,
                    production_version=production, smoke_test=smoke, production_score=None,
                    baseline_score=score(baseline, y, schema.task, metric, classes))
    if not smoke.passed:
        return GateDecision(promoted=False, reason=f"smoke test failed: {smoke.detail}", candidate_score=None,
                            **decision)
    values = predictions(model, X, schema.task)
    cand = score(values, y, schema.task, metric, classes)
    if math.isnan(cand):
        return GateDecision(promoted=False, reason=f"candidate {metric} is NaN on the holdout",
                            candidate_score=None, **decision)
    if production == candidate:
        return GateDecision(promoted=False, reason=f"{candidate} is already production",
                            candidate_score=cand, **decision)
    test, reason, decision["production_score"] = _compare(
        registry, production, X, y, values, baseline, metric=metric, task=schema.task, gate=gate, classes=classes)
    return GateDecision(promoted=test.passed, reason=reason, candidate_score=cand, test=test,
                        compared_with="baseline" if decision["production_score"] is None else "production",
                        **decision)


def gate_and_promote(registry: Registry, candidate_version: str, holdout: pd.DataFrame,
                     schema: FeatureSchema, gate: GateConfig, *, smoke_rows: int = SMOKE_ROWS,
                     seed: int = 0) -> GateDecision:
    """Mark ``candidate_version`` as candidate, test it, and promote it if it passes.

    ``holdout`` holds ``schema.features`` and ``schema.label`` columns (class labels,
    ints or strings, for classification). The decision is recorded as a ``gate`` event; a
    pass also records the ``promote`` event.
    """
    X, y = split_holdout(holdout, schema)
    metric, _ = gate_metric(schema, gate)  # a bad gate config fails before anything is recorded
    _check_metric_for_classes(metric, y, schema.task)
    candidate = registry.set_alias("candidate", candidate_version, reason="gate")
    labels = y if schema.task == "classification" else None
    smoke, model = smoke_test(registry, candidate, X, schema.task, rows=smoke_rows, seed=seed, labels=labels)
    decision = _decide(registry, candidate, X, y, model, schema, gate, smoke)
    registry.record_event("gate", **decision.to_dict())
    if decision.promoted:
        registry.promote(candidate, reason=decision.reason, scores={
            "metric": decision.metric, "candidate": decision.candidate_score,
            "production": decision.production_score, "baseline": decision.baseline_score,
            "test": decision.test.to_json() if decision.test else None})
    return decision


__all__ = ["GateDecision", "PairedTest", "SmokeTest", "gate_and_promote", "gate_metric", "smoke_test"]
