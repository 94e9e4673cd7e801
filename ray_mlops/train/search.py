"""The Ray Tune search over model families.

:func:`run_search` checks its inputs, splits the feature table by entity-key hash, puts
both parts in the object store once (``tune.with_parameters``) and runs a seeded
``Tuner`` whose trials build and fit :mod:`ray_mlops.train.pipelines` Pipelines. The
winning trial is refit on the driver with the same seed, so the returned model is exactly
the one whose validation metrics are reported.

The search space is data: ``{"family": choice(enabled families), "<family>": {param:
domain}}``. A trial reads the parameters of its own family only, and the first trials
cover every enabled family once before random sampling takes over.

Iterative families (whose estimator :func:`~ray_mlops.train.estimators.is_iterative`:
gradient boosting without early stopping) report after each of their stages and are early-stopped by ASHA; the others report once and are never
stopped. Trial results live under ``<storage>/tune/<name>``: a search with the same name
(by default derived from the data, the schema and the train config) resumes where an
interrupted one stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import ray
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from ray_mlops.config import SearchParam, TrainConfig
from ray_mlops.data.schema import FeatureSchema
from ray_mlops.errors import TrainError
from ray_mlops.storage import Storage
from ray_mlops.train.metrics import (
    BINARY_METRICS,
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    classification_metrics,
    metric_names,
    regression_metrics,
)
from ray_mlops.train.estimators import declared_types, inner_estimator, is_iterative
from ray_mlops.train.pipelines import (
    STAGES,
    build_pipeline,
    features_and_label,
    fit_pipeline,
    label_values,
    fit_stages,
    split_by_key,
)

log = logging.getLogger(__name__)

TUNE_DIR = "tune"
FAMILY_KEY = "family"
#: Every metric a trial of the task may report (``f1`` only for two classes).
METRICS = {"classification": CLASSIFICATION_METRICS, "regression": REGRESSION_METRICS}


# -- the search space --------------------------------------------------------------------
def _domain(name: str, spec: SearchParam) -> Any:
    try:
        if spec.type == "uniform":
            return tune.uniform(float(spec.low), float(spec.high))
        if spec.type == "loguniform":
            return tune.loguniform(float(spec.low), float(spec.high))
        if spec.type == "randint":
            if not (float(spec.low).is_integer() and float(spec.high).is_integer()):
                raise ValueError(f"randint bounds must be integers, got {spec.low}..{spec.high}")
            return tune.randint(int(spec.low), int(spec.high))
        if spec.type == "choice":
            if not spec.values:
                raise ValueError("choice needs a non-empty 'values' list")
            return tune.choice(list(spec.values))
        if spec.type == "fixed":
            return spec.value
    except (TypeError, ValueError, AssertionError) as exc:
        raise TrainError(f"search space parameter {name!r} cannot be sampled: {exc}") from exc
    raise TrainError(f"search space parameter {name!r} has unknown type {spec.type!r}")


def enabled_families(train_config: TrainConfig) -> list[str]:
    """Names of the enabled families, in config order."""
    return [name for name, family in train_config.families.items() if family.enabled]


def search_space(train_config: TrainConfig) -> dict[str, Any]:
    """Tune's ``param_space`` for ``train_config``.

    ``randint`` follows Tune: ``high`` is exclusive. ``fixed`` values are constants.

    >>> from ray_mlops.config import load_config
    >>> space = search_space(load_config().train)
    >>> space["family"].categories
    ['logistic_regression', 'hist_gradient_boosting', 'random_forest']
    >>> space["hist_gradient_boosting"]["max_iter"]
    200
    """
    names = enabled_families(train_config)
    if not names:
        raise TrainError("train.families: no model family is enabled")
    if FAMILY_KEY in names:
        raise TrainError(f"train.families: {FAMILY_KEY!r} is reserved and cannot name a family")
    space: dict[str, Any] = {FAMILY_KEY: tune.choice(names)}
    for name in names:
        params = train_config.families[name].search_space
        space[name] = {p: _domain(f"{name}.{p}", spec) for p, spec in params.items()}
    return space


def centre(spec: SearchParam) -> Any:
    """The middle of a numeric dimension (geometric for ``loguniform``); ``None`` otherwise.

    Each family's first trial starts there, so a short search never leaves a family with
    only edge-of-range draws.

    >>> from ray_mlops.config import SearchParam
    >>> centre(SearchParam(type="loguniform", low=0.1, high=1000.0))
    10.0
    >>> centre(SearchParam(type="randint", low=8, high=48))
    27
    >>> centre(SearchParam(type="choice", values=[6, 10])) is None
    True
    """
    if spec.type == "uniform":
        return (float(spec.low) + float(spec.high)) / 2
    if spec.type == "loguniform":
        return float(np.round(np.sqrt(float(spec.low) * float(spec.high)), 12))
    if spec.type == "randint":
        return (int(spec.low) + int(spec.high) - 1) // 2
    return None


def first_points(train_config: TrainConfig) -> list[dict[str, Any]]:
    """One trial per enabled family at the centre of its numeric dimensions (the rest sampled)."""
    points = []
    for name in enabled_families(train_config)[: train_config.num_samples]:
        params = {p: centre(spec) for p, spec in train_config.families[name].search_space.items()}
        points.append({FAMILY_KEY: name, name: {p: v for p, v in params.items() if v is not None}})
    return points


def _candidate_values(spec: SearchParam) -> list[Any]:
    """Values at the edges of a dimension: enough to catch a range the estimator rejects."""
    if spec.type == "fixed":
        return [spec.value]
    if spec.type == "choice":
        return list(spec.values or [])
    if spec.type == "randint":
        return [int(spec.low), int(spec.high) - 1]
    return [float(spec.low), float(spec.high)]


def _param_owner(pipeline: Pipeline, param: str) -> Any:
    """The (sub-)estimator a search-space key sets: a ``__`` path's owner, else the model."""
    if "__" in param:
        return pipeline.get_params()[param.rsplit("__", 1)[0]]
    return inner_estimator(pipeline.named_steps["model"])


def _probe_schema(task: str) -> FeatureSchema:
    return FeatureSchema("id", "y", task, {"x": "numeric"})  # type: ignore[arg-type]


def _check_family_space(train_config: TrainConfig, task: str, family: str, schema: FeatureSchema | None) -> None:
    """Build the pipeline at every edge value of every dimension; sklearn validates them.

    Without ``schema`` the ``__`` paths (which depend on the feature columns) are skipped.
    """
    space = {p: spec for p, spec in train_config.families[family].search_space.items()
             if schema is not None or "__" not in p}
    probe = schema or _probe_schema(task)
    base = {p: _candidate_values(spec)[0] for p, spec in space.items()}
    build_pipeline(probe, family, base, train_config.seed, train_config)  # the estimator itself, its kind
    for param, spec in space.items():
        for value in _candidate_values(spec):
            pipeline = build_pipeline(probe, family, {**base, param: value}, train_config.seed, train_config)
            owner = _param_owner(pipeline, param)
            if not hasattr(owner, "_parameter_constraints"):
                continue  # a class without scikit-learn's declared constraints: validated when it fits
            try:
                owner._validate_params()
            except (TypeError, ValueError) as exc:
                raise TrainError(
                    f"train.families.{family}.search_space.{param}: value {value!r} is not "
                    f"accepted by the estimator: {exc}"
                ) from exc


def check_train_config(train_config: TrainConfig, task: str, schema: FeatureSchema | None = None) -> None:
    """A :class:`TrainError` naming the first problem of the config for ``task``.

    With the feature ``schema``, search-space paths into the feature step are checked too.
    """
    search_space(train_config)
    for name in enabled_families(train_config):
        _check_family_space(train_config, task, name, schema)
    if train_config.metric not in METRICS[task]:
        raise TrainError(
            f"train.metric {train_config.metric!r} is not reported for {task}; "
            f"expected one of {list(METRICS[task])}"
        )
    natural = "max" if train_config.metric in HIGHER_IS_BETTER else "min"
    if train_config.mode != natural:
        raise TrainError(f"train.mode {train_config.mode!r} contradicts train.metric {train_config.metric!r} "
                         f"({natural} is better): the search would pick the worst trial")


# -- input checks ------------------------------------------------------------------------
def _check_columns(frame: pd.DataFrame, schema: FeatureSchema) -> None:
    missing = [c for c in (schema.entity_key, schema.label, *schema.features) if c not in frame.columns]
    if missing:
        raise TrainError(f"feature table lacks columns {missing}")


def _check_label(frame: pd.DataFrame, schema: FeatureSchema, where: str = "training table") -> list[Any]:
    """The sorted class levels (classification; ``[]`` for regression), or a TrainError."""
    label = frame[schema.label]
    nans = int(label.isna().sum())
    if nans:
        raise TrainError(f"label {schema.label!r} has {nans} missing values (NaN) in the {where}")
    if schema.task == "regression":
        if not pd.api.types.is_numeric_dtype(label):
            raise TrainError(f"label {schema.label!r} must be numeric for regression, got {label.dtype}")
        return []
    if pd.api.types.is_float_dtype(label) and not np.all(np.mod(label.to_numpy(), 1) == 0):
        example = label[np.mod(label.to_numpy(), 1) != 0].iloc[0]
        raise TrainError(
            f"label {schema.label!r} has non-integer values (e.g. {example}) for classification; "
            "declare the column `type: category` or `int`, or use task: regression")
    levels = sorted(pd.unique(label_values(label, schema.task)).tolist())
    if len(levels) < 2:
        raise TrainError(
            f"label {schema.label!r} has a single class {levels} in the {where}; classification needs at least two")
    return levels


def _check_metric(metric: str, levels: list[Any]) -> None:
    if len(levels) > 2 and metric in set(BINARY_METRICS) - set(metric_names("classification", len(levels))):
        raise TrainError(
            f"train.metric {metric!r} is for two classes; the label has {len(levels)} classes: "
            f"use one of {list(metric_names('classification', len(levels)))}")


def check_table(frame: pd.DataFrame, schema: FeatureSchema) -> None:
    """A :class:`TrainError` if the table cannot be trained on (empty, one class, NaN label)."""
    if not isinstance(frame, pd.DataFrame):
        raise TrainError(f"the feature table must be a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise TrainError("the training table is empty")
    _check_columns(frame, schema)
    _check_label(frame, schema)


def _check_classes(schema: FeatureSchema, train: pd.DataFrame, valid: pd.DataFrame) -> None:
    """Every class of the validation split must occur in the training split."""
    seen = set(_check_label(train, schema, "training split"))
    only_valid = sorted(set(_check_label(valid, schema, "validation split")) - seen)
    if only_valid:
        rows = int(np.isin(label_values(valid[schema.label], schema.task), only_valid).sum())
        raise TrainError(
            f"label {schema.label!r}: classes {only_valid[:10]} occur only in the validation split "
            f"({rows} rows), never in training; add examples of them or drop those rows")


def _split(frame: pd.DataFrame, schema: FeatureSchema, fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    ordered = frame.sort_values(schema.entity_key, kind="stable").reset_index(drop=True)
    train, valid = split_by_key(ordered, schema.entity_key, fraction)
    if train.empty or valid.empty:
        raise TrainError(
            f"the {len(frame)}-row table leaves an empty {'training' if train.empty else 'validation'} "
            f"split at validation_fraction={fraction}; more rows are needed"
        )
    _check_classes(schema, train, valid)
    return train, valid


# -- the trial ---------------------------------------------------------------------------
def evaluate(model: Pipeline, frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, float]:
    """Validation metrics of a fitted ``model`` on ``frame`` (classification or regression)."""
    X, y = features_and_label(frame, schema)
    if schema.task == "classification":
        return classification_metrics(y, model.predict_proba(X), list(model.classes_))
    return regression_metrics(y, model.predict(X))


@dataclass(frozen=True)
class TrialData:
    """What every trial receives through the object store: both splits, schema, seed."""

    train: pd.DataFrame
    valid: pd.DataFrame
    schema: FeatureSchema
    seed: int
    config: TrainConfig | None = None  # families' estimators and fixed params, text defaults


def family_params(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The family of a trial config and the parameters that belong to it."""
    family = config[FAMILY_KEY]
    return family, dict(config.get(family) or {})


def train_trial(config: dict[str, Any], data: TrialData) -> None:
    """The Tune trainable: fit one family with its params, report validation metrics.

    Iterative families report after every stage (``n_iter`` = iterations so far) so ASHA
    can stop them; the others report once with ``n_iter`` 0.
    """
    family, params = family_params(config)
    pipeline = build_pipeline(data.schema, family, params, data.seed, data.config)
    X, y = features_and_label(data.train, data.schema)
    node_id = ray.get_runtime_context().get_node_id()
    started = time.perf_counter()
    for n_iter in fit_stages(pipeline, X, y, family):
        metrics = evaluate(pipeline, data.valid, data.schema)
        tune.report({**metrics, "n_iter": n_iter, "node_id": node_id,
                     "fit_seconds": time.perf_counter() - started})


def iterative_families(train_config: TrainConfig, schema: FeatureSchema) -> frozenset[str]:
    """The enabled families whose estimator is grown (and reported) in stages."""
    return frozenset(name for name in enabled_families(train_config)
                     if is_iterative(build_pipeline(schema, name, {}, 0, train_config).named_steps["model"]))


class IterativeASHA(AsyncHyperBandScheduler):
    """ASHA that only judges trials of ``iterative`` families; the others always continue."""

    def __init__(self, *, iterative: frozenset[str], **kwargs: Any):
        super().__init__(**kwargs)
        self.iterative = iterative

    def _judged(self, trial: Any) -> bool:
        return trial.config.get(FAMILY_KEY) in self.iterative

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if not self._judged(trial):
            return self.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if not self._judged(trial):
            self._trial_info.pop(trial.trial_id, None)
            return
        super().on_trial_complete(tune_controller, trial, result)


def _scheduler(iterative: frozenset[str]) -> IterativeASHA | None:
    if not iterative:
        return None
    return IterativeASHA(iterative=iterative, time_attr="training_iteration", max_t=STAGES, grace_period=1,
                         reduction_factor=2)


# -- the result --------------------------------------------------------------------------
@dataclass
class SearchResult:
    """The outcome of a search: the winner, refit on the training split, and every trial.

    ``metrics`` are the refit model's metrics on ``validation`` (the held-out split the
    promotion gate should compare on); ``params`` rebuild it exactly with
    ``build_pipeline(schema, family, params, seed, train_config)`` fit on the training
    split. ``trusted_types`` are the family's declared non-scikit-learn types: register
    the model with ``Registry.register(..., trusted_types=result.trusted_types)``.
    """

    family: str
    params: dict[str, Any]
    metrics: dict[str, float]
    model: Pipeline
    trials: pd.DataFrame
    validation: pd.DataFrame
    metric: str
    mode: str
    seed: int
    name: str
    experiment_path: str
    train_rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    trusted_types: list[str] = field(default_factory=list)  # to pass to Registry.register

    @property
    def score(self) -> float:
        """The value of the optimized metric for the returned model."""
        return self.metrics[self.metric]

    @property
    def classes(self) -> list[Any]:
        """The model's class labels in ``predict_proba`` column order (empty for regression)."""
        return [c.item() if hasattr(c, "item") else c for c in getattr(self.model, "classes_", [])]


def _trials_frame(grid: Any, task: str) -> pd.DataFrame:
    rows = []
    for result in grid:
        family, params = family_params(result.config)
        metrics = result.metrics or {}
        row = {
            "trial_id": metrics.get("trial_id") or result.path.rsplit("/", 1)[-1],
            "family": family,
            "params": params,
            "status": "error" if result.error else "ok",
            "error": str(result.error).strip().splitlines()[-1] if result.error else None,
            "training_iteration": metrics.get("training_iteration"),
            "n_iter": metrics.get("n_iter"),
            "node_id": metrics.get("node_id"),
            "fit_seconds": metrics.get("fit_seconds"),
        }
        row.update({m: metrics.get(m, np.nan) for m in METRICS[task]})
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.sort_values("trial_id", kind="stable").reset_index(drop=True)


def _best_row(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series:
    ok = trials[(trials["status"] == "ok") & trials[metric].notna()]
    if ok.empty:
        errors = trials["error"].dropna().unique().tolist()
        raise TrainError(f"all {len(trials)} trials failed; first error: {errors[0] if errors else 'no metrics'}")
    order = ok[metric].rank(method="first", ascending=(mode == "min"))
    return ok.loc[order.idxmin()]


def refit_params(family: str, params: dict[str, Any], n_iter: Any) -> dict[str, Any]:
    """The params that reproduce a trial's model, including where ASHA stopped it."""
    if n_iter and not math.isnan(float(n_iter)):  # only iterative trials report n_iter > 0
        return {**params, "max_iter": int(n_iter)}
    return dict(params)


def _refit(schema: FeatureSchema, row: pd.Series, train_config: TrainConfig, train: pd.DataFrame) -> tuple[Pipeline, dict]:
    params = refit_params(row["family"], row["params"], row["n_iter"])
    with threadpool_limits(limits=1):  # what a 1-CPU trial used: same arithmetic
        model = fit_pipeline(schema, row["family"], params, train_config.seed, train, train_config)
    return model, params


# -- running it --------------------------------------------------------------------------
def data_digest(frame: pd.DataFrame, schema: FeatureSchema, train_config: TrainConfig) -> str:
    """sha256 over the table's content, the schema and the train config."""
    hasher = hashlib.sha256()
    hasher.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    hasher.update(json.dumps(schema.to_dict(), sort_keys=True).encode())
    hasher.update(json.dumps(train_config.model_dump(mode="json"), sort_keys=True).encode())
    return hasher.hexdigest()


def _experiment(storage: Storage, name: str) -> tuple[str, str, Any]:
    """(storage_path, experiment path, filesystem or None) for Tune."""
    fs = None if storage.is_local else storage.fs
    base = storage.path(TUNE_DIR)
    return base, f"{base}/{name}", fs


def _can_restore(path: str, fs: Any) -> bool:
    try:
        return tune.Tuner.can_restore(path, storage_filesystem=fs)
    except Exception:  # an unreadable folder is simply not restorable
        return False


class SearchProgress(tune.Callback):
    """Reports the search as it runs: trials done/running/failed and the best metric so far."""

    def __init__(self, metric: str, mode: str, total: int):
        self.metric, self.mode, self.total = metric, mode, total
        self.best: float | None = None
        self.done: set[str] = set()
        self.failed: set[str] = set()

    def _report(self, trials: list) -> None:
        from ray_mlops.progress import report

        ended = self.done | self.failed
        running = sum(1 for t in trials if t.status == "RUNNING" and t.trial_id not in ended)
        best = "-" if self.best is None else f"{self.best:.4f}"
        report("search: %d/%d trials done, %d running, %d failed; best %s %s",
               len(self.done), self.total, running, len(self.failed), self.metric, best)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
                self.best = float(value)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._report(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done.add(trial.trial_id)
        self._report(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed.add(trial.trial_id)
        self._report(trials)


def _tuner(
    trainable: Any, train_config: TrainConfig, iterative: frozenset[str], storage_path: str, fs: Any, name: str,
    callbacks: Sequence[tune.Callback] = (),
) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        param_space=search_space(train_config),
        tune_config=tune.TuneConfig(
            metric=train_config.metric,
            mode=train_config.mode,
            num_samples=train_config.num_samples,
            search_alg=BasicVariantGenerator(
                points_to_evaluate=first_points(train_config),
                max_concurrent=train_config.max_concurrent_trials,
                random_state=train_config.seed,
            ),
            scheduler=_scheduler(iterative),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=tune.FailureConfig(max_failures=train_config.max_failures),
            verbose=0,
            callbacks=[SearchProgress(train_config.metric, train_config.mode, train_config.num_samples), *callbacks],
        ),
    )


def run_search(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    train_config: TrainConfig,
    storage: Storage,
    *,
    name: str | None = None,
    resume: bool = True,
    trial_fn: Callable[[dict[str, Any], TrialData], None] = train_trial,
    callbacks: Sequence[tune.Callback] = (),
) -> SearchResult:
    """Run (or resume) the Tune search and return the refit best model.

    ``name`` defaults to ``search-<digest>`` of the data, schema and config, so running
    the same search again resumes it (or, when finished, just reads its results). With
    ``resume=False`` an existing experiment of that name is left alone and a new one with
    a time suffix is started. ``trial_fn`` is the per-trial function (default
    :func:`train_trial`); wrappers of it can inject faults or record timings. ``callbacks``
    go to Tune (e.g. :func:`ray_mlops.tracking.tune_callbacks`; a resumed search keeps its own).

    Raises :class:`TrainError` before any trial for an unusable table or config, and
    after the search when no trial produced metrics.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    train, valid = _checked_split(frame, schema, train_config)
    name, (storage_path, path, fs), restorable = _experiment_to_run(
        storage, name or f"search-{data_digest(frame, schema, train_config)[:16]}", resume)
    data = TrialData(train=train, valid=valid, schema=schema, seed=train_config.seed, config=train_config)
    trainable = tune.with_resources(tune.with_parameters(trial_fn, data=data), {"cpu": train_config.cpus_per_trial})
    iterative = iterative_families(train_config, schema)
    try:
        tuner = (_restored(path, trainable, fs) if restorable
                 else _tuner(trainable, train_config, iterative, storage_path, fs, name, callbacks))
        grid, tune_seconds = _fit(tuner)
    except (tune.TuneError, OSError, ValueError, RuntimeError) as exc:
        raise TrainError(f"Tune search {name!r} failed: {exc}") from exc
    result = _result(grid, schema, train_config, train, valid, name, path)
    result.extra["tune_seconds"] = tune_seconds
    return result


def _restored(path: str, trainable: Any, fs: Any) -> tune.Tuner:
    log.info("resuming Tune search %s", path)
    return tune.Tuner.restore(path, trainable=trainable, resume_errored=True, storage_filesystem=fs)


def _fit(tuner: tune.Tuner) -> tuple[Any, float]:
    """The ResultGrid of ``tuner.fit()`` and the seconds it took."""
    started = time.perf_counter()
    grid = tuner.fit()
    return grid, time.perf_counter() - started


def _checked_split(frame: pd.DataFrame, schema: FeatureSchema, train_config: TrainConfig) -> tuple:
    """The (train, validation) split, after checking the table and the config against each other."""
    check_table(frame, schema)
    check_train_config(train_config, schema.task, schema)
    _check_metric(train_config.metric, _check_label(frame, schema))
    return _split(frame, schema, train_config.validation_fraction)


def _experiment_to_run(storage: Storage, name: str, resume: bool) -> tuple[str, tuple, bool]:
    """``(name, (storage_path, path, fs), restorable)``: a finished or interrupted search of
    ``name`` is resumed, unless ``resume`` is False, when a new one with a time suffix starts."""
    location = _experiment(storage, name)
    restorable = _can_restore(location[1], location[2])
    if restorable and not resume:
        name = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        return name, _experiment(storage, name), False
    return name, location, restorable


def _result(
    grid: Any, schema: FeatureSchema, train_config: TrainConfig, train: pd.DataFrame,
    valid: pd.DataFrame, name: str, path: str,
) -> SearchResult:
    trials = _trials_frame(grid, schema.task)
    best = _best_row(trials, train_config.metric, train_config.mode)
    model, params = _refit(schema, best, train_config, train)
    family = train_config.families[best["family"]]
    metrics = evaluate(model, valid, schema)
    reported = best[train_config.metric]
    if not np.isclose(metrics[train_config.metric], reported, rtol=0, atol=1e-9):
        log.warning("refit %s=%s differs from trial's %s", train_config.metric, metrics[train_config.metric], reported)
    return SearchResult(
        family=best["family"], params=params, metrics=metrics, model=model, trials=trials,
        validation=valid, metric=train_config.metric, mode=train_config.mode,
        seed=train_config.seed, name=name, experiment_path=path, train_rows=len(train),
        extra={"best_trial_id": best["trial_id"]},
        trusted_types=declared_types(schema.task, best["family"], family.estimator, family.trusted_types),
    )


__all__ = [
    "METRICS",
    "SearchResult",
    "TrialData",
    "check_table",
    "check_train_config",
    "data_digest",
    "enabled_families",
    "evaluate",
    "family_params",
    "iterative_families",
    "refit_params",
    "run_search",
    "search_space",
    "train_trial",
]
