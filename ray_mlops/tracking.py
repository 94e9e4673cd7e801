"""Optional experiment tracking in MLflow, beside the registry (which stays the source of truth).

Off unless ``tracking.mlflow_uri`` is set; the client comes from the optional extra
(``pip install 'ray-mlops[mlflow]'``, the lightweight ``mlflow-skinny``). When on:

- every Tune trial becomes an MLflow run (its params, final metrics, ``family``) in one
  experiment per search, named ``<project>/<search name>``, by :class:`MlflowCallback`
  (a ``ray.tune.Callback`` that :func:`tune_callbacks` hands to the search);
- every registered version becomes an MLflow model version of the registered model
  ``<model_name>``, tagged with our version name, its sha256, the gate decision and its
  lineage (:func:`log_registration`), its run holding our ``metadata.json``.

Batch training (``ray-mlops train``) and the monitor's retraining log alike: a retraining's
trials go to the experiment ``<project>/retrain-<id>``, and its version also carries the
``ray_mlops.retrain`` / ``ray_mlops.drift_onset`` / ``ray_mlops.trigger_window`` tags.

MLflow being down or refusing never breaks training or registration: each failed call is
a warning in the log and one more ``ray_mlops_tracking_failures`` (by ``operation``), and
the work goes on. Logging is idempotent (a trial or version already logged is skipped),
so a resumed search or a re-run registration does not duplicate runs.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from ray import tune

from ray_mlops import telemetry
from ray_mlops.config import Config, TrackingConfig
from ray_mlops.errors import ConfigError

log = logging.getLogger(__name__)

FAILURES_METRIC = "ray_mlops_tracking_failures"  # a counter, tagged operation
TRIAL_TAG = "ray_mlops.trial_id"
VERSION_TAG = "ray_mlops.version"
FAMILY_TAG = "family"
RETRAIN_LINEAGE = ("retrain", "drift_onset", "trigger_window")  # recorded in ``extra`` by a retraining
# Tune's bookkeeping in a trial result: not model metrics.
_NOT_METRICS = {"timestamp", "pid", "time_this_iter_s", "time_total_s", "time_since_restore",
                "iterations_since_restore", "done", "date", "hostname", "node_ip", "checkpoint_dir_name"}

T = TypeVar("T")


@dataclass(frozen=True)
class TrialRecord:
    """One finished (or failed) Tune trial, as logged."""

    experiment: str
    trial_id: str
    family: str
    params: dict[str, Any]
    metrics: dict[str, float]
    status: str  # MLflow's run status: FINISHED or FAILED


@dataclass(frozen=True)
class VersionRecord:
    """One registered version and its gate decision, as logged."""

    experiment: str
    model_name: str
    version: str
    sha256: str
    params: dict[str, Any]
    metrics: dict[str, float]
    promoted: bool
    reason: str
    lineage: dict[str, str] = field(default_factory=dict)  # parent, data fingerprint, config hash...
    metadata: dict[str, Any] = field(default_factory=dict)  # our metadata.json, kept as a run artifact


def _mlflow() -> Any:
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError as exc:
        raise ConfigError("tracking.mlflow_uri is set but mlflow is not installed: "
                          "pip install 'ray-mlops[mlflow]'") from exc
    import mlflow

    return mlflow


def _numbers(values: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


class MlflowTracker:
    """Logs trials and versions to one MLflow server; never raises (see the module docstring).

    ``failures`` counts the calls that failed in this process.
    """

    def __init__(self, config: TrackingConfig):
        if not config.mlflow_uri:
            raise ConfigError("tracking.mlflow_uri: not set")
        self.config = config
        self.failures = 0
        self._client: Any = None
        self._mlflow = _mlflow()
        # MLflow reads these per request; an operator's own setting wins.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(config.retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, math.ceil(config.timeout_s))))

    def __getstate__(self) -> dict:  # Tune may pickle its callbacks: keep the client out
        return {"config": self.config, "failures": self.failures}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["config"])
        self.failures = state["failures"]

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._mlflow.tracking.MlflowClient(tracking_uri=self.config.mlflow_uri)
        return self._client

    def _guard(self, operation: str, fn: Callable[[], T]) -> T | None:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - tracking never breaks the work it tracks
            self.failures += 1
            log.warning("MLflow tracking (%s) failed at %s; continuing without it: %s",
                        operation, self.config.mlflow_uri, str(exc).splitlines()[0][:300])
            telemetry.count(FAILURES_METRIC, "MLflow tracking calls that failed, by operation",
                            {"operation": operation})
            return None

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except self._mlflow.exceptions.MlflowException:  # created meanwhile by another process
            return self.client.get_experiment_by_name(name).experiment_id

    def _find_run(self, experiment_id: str, tag: str, value: str) -> str | None:
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
        return runs[0].info.run_id if runs else None

    def _new_run(self, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, Any],
                 metrics: dict[str, float]) -> str:
        from mlflow.entities import Metric, Param

        run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                              params=[Param(k, str(v)) for k, v in params.items()])
        return run_id

    # -- trials --------------------------------------------------------------------------
    def log_trial(self, record: TrialRecord) -> str | None:
        """The trial's run id (new, or the one already logged); None when MLflow failed."""
        return self._guard("trial", lambda: self._log_trial(record))

    def _log_trial(self, record: TrialRecord) -> str:
        experiment_id = self._experiment_id(record.experiment)
        existing = self._find_run(experiment_id, TRIAL_TAG, record.trial_id)
        if existing is not None:
            return existing
        run_id = self._new_run(experiment_id, record.trial_id, {TRIAL_TAG: record.trial_id, FAMILY_TAG: record.family},
                               {FAMILY_TAG: record.family, **record.params}, record.metrics)
        self.client.set_terminated(run_id, status=record.status)
        return run_id

    # -- registered versions ---------------------------------------------------------------
    def log_version(self, record: VersionRecord) -> str | None:
        """The MLflow model version (new, or the one already logged); None when MLflow failed."""
        return self._guard("version", lambda: self._log_version(record))

    def _version_tags(self, record: VersionRecord) -> dict[str, str]:
        return {VERSION_TAG: record.version, "ray_mlops.sha256": record.sha256,
                "ray_mlops.gate": "promoted" if record.promoted else "rejected",
                "ray_mlops.gate_reason": record.reason[:5000],
                **{f"ray_mlops.{k}": str(v) for k, v in record.lineage.items()}}

    def _log_version(self, record: VersionRecord) -> str:
        found = self.client.search_model_versions(
            f"name = '{record.model_name}' and tags.`{VERSION_TAG}` = '{record.version}'")
        if found:
            return found[0].version
        experiment_id = self._experiment_id(record.experiment)
        tags = self._version_tags(record)
        run_id = self._find_run(experiment_id, VERSION_TAG, record.version) or self._new_run(
            experiment_id, f"{record.model_name} {record.version}", tags,
            {FAMILY_TAG: record.params.get(FAMILY_TAG, ""), **record.params}, record.metrics)
        self.client.log_dict(run_id, record.metadata, "ray_mlops/metadata.json")
        self.client.set_terminated(run_id, status="FINISHED")
        try:
            self.client.create_registered_model(record.model_name)
        except self._mlflow.exceptions.MlflowException:  # already registered
            pass
        version = self.client.create_model_version(
            record.model_name, source=f"runs:/{run_id}/ray_mlops", run_id=run_id, tags=tags,
            description=f"ray_mlops {record.model_name} {record.version} (the ray_mlops registry is the source of truth)")
        return version.version


# -- the Tune callback -----------------------------------------------------------------------
def trial_record(trial: Any, project: str, status: str) -> TrialRecord:
    """What is logged of a Tune trial: family and its params, final numeric metrics."""
    config = dict(trial.config or {})
    family = str(config.get(FAMILY_TAG, ""))
    params = dict(config.get(family) or {}) if isinstance(config.get(family), dict) else {}
    return TrialRecord(experiment=f"{project}/{trial.experiment_dir_name}", trial_id=str(trial.trial_id),
                       family=family, params=params, metrics=_numbers(trial.last_result or {}), status=status)


class MlflowCallback(tune.Callback):
    """Logs each Tune trial as an MLflow run when it completes or fails for good."""

    def __init__(self, tracker: MlflowTracker, project: str):
        self.tracker, self.project = tracker, project

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.log_trial(trial_record(trial, self.project, "FINISHED"))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.log_trial(trial_record(trial, self.project, "FAILED"))


def tracker(config: Config) -> MlflowTracker | None:
    """The tracker of ``config.tracking``, or None when tracking is off."""
    return MlflowTracker(config.tracking) if config.tracking.mlflow_uri else None


def tune_callbacks(config: Config) -> list[tune.Callback]:
    """The callbacks a search passes to Tune: ``[]`` when tracking is off."""
    found = tracker(config)
    return [] if found is None else [MlflowCallback(found, config.project)]


def log_registration(config: Config, metadata: dict[str, Any], *, promoted: bool, reason: str,
                     search_name: str) -> str | None:
    """Log a registered version (its ``metadata.json``) and its gate decision; None when off or failed."""
    found = tracker(config)
    if found is None:
        return None
    extra = metadata.get("extra") or {}
    lineage = {key: metadata.get(key) for key in ("parent", "data_fingerprint", "config_hash", "created")
               if metadata.get(key) is not None}
    lineage |= {key: extra[key] for key in RETRAIN_LINEAGE if extra.get(key) is not None}  # a monitor's retraining
    record = VersionRecord(
        experiment=f"{config.project}/{search_name}", model_name=config.model_name, version=str(metadata["version"]),
        sha256=str((metadata.get("artifact") or {}).get("sha256", "")), params=dict(metadata.get("params") or {}),
        metrics=_numbers(metadata.get("metrics") or {}), promoted=promoted, reason=reason, lineage=lineage,
        metadata=metadata)
    return found.log_version(record)


__all__ = ["MlflowTracker", "MlflowCallback", "TrialRecord", "VersionRecord", "tracker", "tune_callbacks",
           "log_registration", "trial_record", "FAILURES_METRIC"]
