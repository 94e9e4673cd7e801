"""Retraining on confirmed drift: re-ingest, search, register, gate, promote, hot-swap.

:func:`retrain` is what the monitor launches (as separate Ray work, see
:mod:`ray_mlops.monitor.actor`) when drift is confirmed:

1. re-ingest the configured sources (new labeled data may have landed);
2. gather the *labeled* prediction log since the drift onset (predictions joined with
   ``/feedback`` labels on ``(request_id, row)``), split by a hash of the entity:
   ``retrain.log_train_fraction`` of it joins the training table, the rest is the
   gate's holdout — recent post-drift data neither model was fitted on;
3. run the Tune search on the table plus those rows, register the winner with its
   lineage; when a post-drift holdout exists it becomes the version's reference profile
   (the distribution the new model will serve, so the monitor stops flagging the drift
   it was retrained for);
4. gate it against production on the holdout (the offline paired gate);
5. with ``monitor.shadow.enabled`` (the default) and a swap that can deploy shadows
   (``swap.set_shadow``), a candidate that passed goes into **shadow** beside production
   (its promotion is held, :class:`HeldPromotion`): the outcome is ``shadowing`` and the
   monitor's :class:`~ray_mlops.monitor.shadow.ShadowTracker` promotes or discards it on
   the online paired gate of live labeled rows. Otherwise (shadow off, or nothing
   deployed) it is promoted and Serve hot-swapped through ``swap(config, version)``; a
   failed swap rolls production back, so the registry never names a version that is not served.

Any failure leaves production as it was and is recorded as a ``retrain_failed`` event
(in the monitor's event log, :class:`~ray_mlops.monitor.store.MonitorStore`) with the
stage it failed in. ``search`` is injectable (default
:func:`ray_mlops.train.search.run_search`) so faults can be tested.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ray_mlops import tracking
from ray_mlops.config import Config
from ray_mlops.data.ingest import ingest
from ray_mlops.data.schema import FeatureSchema, cast_features, read_feature_table
from ray_mlops.errors import RayMlopsError
from ray_mlops.contracts import FEEDBACK_DIR, PREDICTIONS_DIR, read_partitioned, record_keys
from ray_mlops.monitor.retraining import SHADOWED
from ray_mlops.monitor.store import MonitorStore
from ray_mlops.monitor.tester import now_iso
from ray_mlops.pipeline import register_search
from ray_mlops.progress import report
from ray_mlops.promotion import gate_and_promote
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage
from ray_mlops.train.search import SearchResult, run_search

log = logging.getLogger(__name__)

Swap = Callable[[Config, str], Any]


class RetrainFailed(RayMlopsError):
    """A retraining stage failed; ``stage`` names it."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage = stage


# -- the labeled prediction log ----------------------------------------------------------
def labeled_predictions(storage: Storage, schema: FeatureSchema, since: str | None = None) -> pd.DataFrame:
    """Logged predictions (from ``since``, an ISO time) that got a label, as feature-table rows.

    The entity key is the one the client sent, else ``<request_id>:<row>``.
    """
    predictions = read_partitioned(storage, PREDICTIONS_DIR, since)
    feedback = read_partitioned(storage, FEEDBACK_DIR, since)  # a label comes after its prediction
    if predictions.empty or feedback.empty:
        return pd.DataFrame(columns=[schema.entity_key, schema.label, *schema.features])
    if since is not None:
        predictions = predictions[pd.to_datetime(predictions["time"], utc=True) >= pd.Timestamp(since)]
    labels = dict(zip(record_keys(feedback), feedback["label"]))
    keys = record_keys(predictions)
    rows = predictions.assign(**{schema.label: keys.map(labels)})
    rows = rows[rows[schema.label].notna()]
    entity = rows["entity"] if "entity" in rows else pd.Series(None, index=rows.index)
    rows = rows.assign(**{schema.entity_key: entity.where(entity.notna(), keys[rows.index])})
    rows = rows.drop_duplicates(subset=["request_id", "row"])
    return cast_features(rows, schema)


def _fraction(key: str) -> float:
    return int(hashlib.sha1(f"holdout:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def split_recent(rows: pd.DataFrame, key: str, train_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training extras, holdout) of the labeled recent rows, by a hash of the entity."""
    to_train = rows[key].astype(str).map(_fraction).to_numpy() < train_fraction
    return rows[to_train].reset_index(drop=True), rows[~to_train].reset_index(drop=True)


# -- the stages ------------------------------------------------------------------------
@dataclass
class Stages:
    """Runs one retraining's stages in turn: each timed, reported as progress, a failure named.

    ``seconds`` holds each stage's time (also of one that failed). Progress lines go to
    :mod:`ray_mlops.progress` (``retrain r1: search started``, ``… search done in 12.3 s``).
    """

    job: str
    seconds: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` as stage ``name``; any failure becomes :class:`RetrainFailed` naming it."""
        report("retrain %s: %s started", self.job, name)
        started = time.perf_counter()
        try:
            value = fn()
        except RetrainFailed as exc:
            self._ended(name, started, f"failed: {exc}")
            raise
        except Exception as exc:  # any failure of a stage is recorded with its name
            self._ended(name, started, f"failed: {type(exc).__name__}: {exc}")
            raise RetrainFailed(name, f"{type(exc).__name__}: {exc}") from exc
        self._ended(name, started, "done")
        return value

    def _ended(self, name: str, started: float, how: str) -> None:
        self.seconds[name] = round(time.perf_counter() - started, 2)
        report("retrain %s: %s %s in %.1f s", self.job, name, how[:300], self.seconds[name])


def _training_frame(table: pd.DataFrame, extra: pd.DataFrame, holdout: pd.DataFrame, key: str) -> pd.DataFrame:
    """The feature table plus the extra log rows, without any entity of the holdout."""
    frame = pd.concat([table, extra[table.columns]], ignore_index=True) if len(extra) else table
    return frame[~frame[key].astype(str).isin(set(holdout[key].astype(str)))].reset_index(drop=True)


def _swap(config: Config, registry: Registry, version: str, swap: Swap) -> str:
    try:
        return str(swap(config, version))
    except Exception as exc:
        registry.rollback(reason=f"hot swap to {version} failed: {exc}")
        raise RetrainFailed("swap", f"{type(exc).__name__}: {exc}; production rolled back") from exc


class HeldPromotion:
    """The registry as the offline gate sees it when a shadow comes next: its promotion is
    recorded, not applied (:meth:`release` applies it); everything else is the registry's."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.held: tuple[str, str, dict | None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)

    def promote(self, version: str, *, reason: str, scores: dict | None = None) -> str:
        self.held = (version, reason, scores)
        return version

    def release(self) -> None:
        """Apply the held promotion (no shadow could be deployed)."""
        if self.held is not None:
            version, reason, scores = self.held
            self.registry.promote(version, reason=reason, scores=scores)


def _shadow(config: Config, version: str, swap: Any) -> str | None:
    """Deploy ``version`` as the shadow; None when nothing is deployed (RetrainFailed when it fails to load)."""
    try:
        shadowed = swap.set_shadow(config, version)
    except Exception as exc:  # production serves alone; /health says why
        raise RetrainFailed("shadow", f"{type(exc).__name__}: {exc}; production serves alone") from exc
    return None if shadowed is None else str(shadowed)


def _gate_and_deploy(config: Config, gate: Any, registry: Registry, version: str, gate_rows: pd.DataFrame,
                     schema: FeatureSchema, swap: Swap | None, stages: Stages) -> dict[str, Any]:
    """The offline gate, then shadow (its promotion held) or promotion and swap; the outcome's fields."""
    shadowing = config.monitor.shadow.enabled and callable(getattr(swap, "set_shadow", None))
    gate_registry = HeldPromotion(registry) if shadowing else registry
    decision = stages.run("gate", lambda: gate_and_promote(gate_registry, version, gate_rows, schema, gate))
    fields: dict[str, Any] = {"status": "promoted" if decision.promoted else "rejected", "served": None,
                              "decision": _plain_decision(decision.to_dict())}
    if decision.promoted and shadowing:
        started = now_iso()
        shadowed = stages.run("shadow", lambda: _shadow(config, version, swap))
        if shadowed is not None:
            return {**fields, "status": SHADOWED, "shadow": shadowed, "shadow_started": started}
        gate_registry.release()  # nothing deployed to shadow in: promote now
    if decision.promoted and swap is not None:  # _swap rolls production back and raises its own RetrainFailed
        fields["served"] = stages.run("swap", lambda: _swap(config, registry, version, swap))
    return fields


def retrain(config: Config, storage: Storage, job: dict, *, swap: Swap | None = None,
            search: Callable[..., SearchResult] = run_search) -> dict[str, Any]:
    """Run one retraining for ``job`` (``id``, ``onset``, ...) and return its outcome.

    Never raises for a failed stage: the outcome has ``status`` ``promoted``,
    ``rejected`` (the gate said no) or ``failed`` (with ``stage`` and ``error``).
    """
    registry, events = Registry(storage, config.model_name), MonitorStore(storage)
    started = time.time()
    outcome: dict[str, Any] = {"id": job["id"], "started": started, "production_before": registry.get_alias("production")}
    events.record_event("retrain_started", retrain=job["id"], onset=job.get("onset"),
                          trigger_window=job.get("trigger_window"), production=outcome["production_before"])
    stages = Stages(job["id"])
    try:
        outcome.update(_run(config, storage, job, registry, swap, search, stages))
    except RetrainFailed as exc:
        outcome.update(status="failed", stage=exc.stage, error=str(exc)[:1000])
    outcome.update(finished=time.time(), seconds=round(time.time() - started, 1), stage_seconds=stages.seconds,
                   production_after=registry.get_alias("production"))
    report("retrain %s: %s%s in %.1f s; production %s", job["id"], outcome["status"],
           f" {outcome['version']}" if outcome.get("version") else f" at {outcome.get('stage')}",
           outcome["seconds"], outcome["production_after"])
    kind = "retrain_failed" if outcome["status"] == "failed" else "retrain_finished"
    events.record_event(kind, retrain=job["id"], **{k: v for k, v in outcome.items() if k not in ("id",)})
    return outcome


def _run(config: Config, storage: Storage, job: dict, registry: Registry, swap: Swap | None,
         search: Callable[..., SearchResult], stages: Stages) -> dict[str, Any]:
    ingested = stages.run("ingest", lambda: ingest(config, storage))
    schema, key = ingested.schema, ingested.schema.entity_key
    table = stages.run("read", lambda: read_feature_table(storage, ingested))
    recent = stages.run("prediction log", lambda: labeled_predictions(storage, schema, job.get("onset")))
    extra, holdout = split_recent(recent, key, config.monitor.retrain.log_train_fraction)
    if len(holdout) < config.monitor.retrain.min_holdout_rows:
        extra, holdout = recent, None
    frame = _training_frame(table, extra, holdout if holdout is not None else extra.iloc[:0], key)
    result = stages.run("search", lambda: search(frame, schema, _train_config(config), storage,
                                                 name=f"retrain-{job['id']}", callbacks=tracking.tune_callbacks(config)))
    lineage = {"retrain": job["id"], "drift_onset": job.get("onset"), "trigger_window": job.get("trigger_window")}
    version = stages.run("register", lambda: register_search(config, storage, result, ingested, holdout=holdout,
                                                             lineage=lineage))
    gate_rows = holdout if holdout is not None else result.validation
    gate = config.gate.model_copy(update={"require": config.monitor.retrain.require})  # default: superior
    deployed = _gate_and_deploy(config, gate, registry, version, gate_rows, schema, swap, stages)
    tracking.log_registration(config, registry.metadata(version), promoted=deployed["status"] == "promoted",
                              reason=deployed["decision"]["reason"], search_name=result.name)
    return {**deployed, "version": version, "family": result.family, "holdout_rows": len(gate_rows),
            "holdout": "post-drift prediction log" if holdout is not None else "search validation",
            "table_rows": len(table), "log_rows_added": len(extra), "train_rows": result.train_rows,
            "fingerprint": ingested.fingerprint}


def _train_config(config: Config) -> Any:
    """The search's config: ``train``, with ``monitor.retrain.num_samples`` trials when set."""
    if config.monitor.retrain.num_samples:
        return config.train.model_copy(update={"num_samples": config.monitor.retrain.num_samples})
    return config.train


def _plain_decision(decision: dict) -> dict:
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in decision.items()}


__all__ = ["retrain", "labeled_predictions", "split_recent", "RetrainFailed", "HeldPromotion"]
