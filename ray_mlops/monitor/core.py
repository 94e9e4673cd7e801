"""The monitor's logic, without Ray: receive records, cut windows, test, checkpoint, retrain.

:class:`Monitor` is driven by two calls: :meth:`Monitor.receive` (cheap: validate the
columns, append, return) and :meth:`Monitor.step` (everything else, run off the receive
path by the actor's background thread). Its collaborators are injected:

- a :class:`~ray_mlops.monitor.store.MonitorStore` (checkpoints, verdicts, the logs),
- a ``launcher`` with ``launch(job)`` and ``poll(job) -> final status | None`` (the
  actor passes one that runs :func:`ray_mlops.monitor.retrain.retrain` as separate Ray
  work; tests pass a recording one),
- a ``rollback(plan) -> outcome`` action for probation (the actor passes
  :func:`ray_mlops.monitor.probation.roll_back` with the registry and the injected Serve
  swap; tests pass a recording one; None: no probation),
- an ``observe(kind, payload)`` hook (metrics).

A version a retraining promoted is on probation for ``probation_windows`` windows
(:mod:`ray_mlops.monitor.probation`): a window whose accuracy test says it is worse than
it was promoted with rolls production back, once per promotion. After a rollback no
alarm can be raised for ``cooldown`` windows, doubled for each further rollback in a row
(reset when a probation passes): the drift that caused the retraining is still there, and
retraining resumes only at that slower pace. A retraining already running is left to
finish (its gate compares against whatever is production then).

State that survives a restart: the open window (``window.parquet``, every
``checkpoint_interval_s`` and at each cut), the stream state, verdict summaries, the
retraining state (written *before* a launch, so a restart never launches twice), the
probation state (written *before* a rollback, which a restart completes) and the keys of
recent records. On restart the records the replicas logged to storage after the
last checkpoint are read back and de-duplicated by key, so no acknowledged record is lost.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import pandas as pd

from ray_mlops.config import Config
from ray_mlops.data.schema import feature_schema
from ray_mlops.errors import RayMlopsError
from ray_mlops.monitor.drift import DriftStream
from ray_mlops.monitor.probation import (
    ACTIVE,
    FAILED,
    PASSED,
    ROLLED_BACK,
    ROLLING_BACK,
    SUPERSEDED,
    Probation,
    is_loop_promotion,
)
from ray_mlops.monitor.reference import Reference, WindowTest
from ray_mlops.contracts import PREDICTIONS_DIR, REQUIRED_META, record_keys
from ray_mlops.monitor.store import FeedbackIndex, MonitorStore
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

CATCH_UP_SLACK_S = 3.0
RECENT_KEY_WINDOWS = 5
MAX_BACKLOG_WINDOWS = 20
TOP_FEATURES = 8
MAX_BACKOFF_DOUBLINGS = 4  # the cooldown after rollbacks in a row grows to at most 16x


class Launcher(Protocol):
    def launch(self, job: dict) -> None: ...

    def poll(self, job: dict) -> dict | None: ...


def _now_iso(stamp: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if stamp is None else stamp, timezone.utc).isoformat()


def _fresh_state(config: Config) -> dict[str, Any]:
    cfg = config.monitor
    return {"windows": 0, "skipped_windows": 0, "records": 0, "bad_records": 0, "dropped_records": 0,
            "restarts": 0, "reference_version": None, "window_opened": None,
            "stream": DriftStream(None, patience=cfg.patience, cooldown=cfg.cooldown,
                                  max_history=cfg.history).to_state(),
            "verdicts": [], "recent_keys": [], "retrain": {"active": None, "history": []},
            "probation": _fresh_probation(),
            "checkpoint_time": None, "started": _now_iso()}


def _fresh_probation() -> dict[str, Any]:
    return {"active": None, "history": [], "consecutive_rollbacks": 0}


class Monitor:
    """Windows of prediction records tested against the production version's reference."""

    def __init__(self, config: Config, storage: Storage, *, launcher: Launcher | None = None,
                 rollback: Callable[[dict], dict] | None = None,
                 observe: Callable[[str, dict], None] = lambda kind, payload: None,
                 clock: Callable[[], float] = time.time):
        self.config, self.cfg = config, config.monitor
        self.store = MonitorStore(storage)
        self.registry = Registry(storage, config.model_name)
        self.schema = feature_schema(config)
        self.required = [*self.schema.features, *REQUIRED_META]
        self.launcher, self.rollback, self.observe, self.clock = launcher, rollback, observe, clock
        self.labels = FeedbackIndex(self.store)
        self.reference: Reference | None = None
        self._lock = threading.Lock()
        self._incoming: list[pd.DataFrame] = []
        self._rejected: list[str] = []
        self._dirty = False
        self._last_checkpoint = 0.0
        self._resume()

    # -- receiving (the cheap path) -----------------------------------------------------
    def receive(self, records: Any) -> int:
        """Queue a frame of prediction records; returns the rows accepted (never raises)."""
        problem = self._schema_problem(records)
        with self._lock:
            if problem is not None:
                self._rejected.append(problem)
                return 0
            self._incoming.append(records)
        return len(records)

    def _schema_problem(self, records: Any) -> str | None:
        if not isinstance(records, pd.DataFrame):
            return f"expected a pandas DataFrame of prediction records, got {type(records).__name__}"
        missing = [c for c in self.required if c not in records.columns]
        if missing:
            return f"{len(records)} records lack columns {missing[:5]}" + (" …" if len(missing) > 5 else "")
        return None

    # -- the background step -------------------------------------------------------------
    def step(self) -> list[dict]:
        """Merge received records, test every full window, follow retraining, checkpoint.

        Returns the verdicts of the windows tested in this step.
        """
        self._report_rejects()
        self._merge()
        self._follow_probation()
        self._follow_production()
        verdicts = []
        while self._window_due():
            verdicts.append(self._cut_and_test())
        self._follow_retrain()
        self._checkpoint(force=bool(verdicts))
        return verdicts

    def _merge(self) -> None:
        with self._lock:
            incoming, self._incoming = self._incoming, []
        if not incoming:
            return
        frame = pd.concat([self.window, *incoming] if len(self.window) else incoming, ignore_index=True)
        keys = record_keys(frame)
        fresh = ~keys.duplicated() & ~keys.isin(self._recent_keys)
        added = int(fresh.sum()) - len(self.window)
        self.window = frame[fresh.to_numpy()].reset_index(drop=True)
        self.state["records"] += added
        if self.state["window_opened"] is None and len(self.window):
            self.state["window_opened"] = self.clock()
        self._cap_backlog()
        self._dirty = True

    def _cap_backlog(self) -> None:
        """Without a reference nothing can be tested: keep a bounded backlog, count the rest."""
        limit = MAX_BACKLOG_WINDOWS * self.cfg.window_size
        if self.reference is None and len(self.window) > limit:
            dropped = len(self.window) - limit
            self.window = self.window.iloc[dropped:].reset_index(drop=True)
            self.state["dropped_records"] += dropped
            self._event("monitor_backlog_dropped", records=dropped, reason="no production reference")

    def _report_rejects(self) -> None:
        with self._lock:
            rejected, self._rejected = self._rejected, []
        if rejected:
            self.state["bad_records"] += len(rejected)
            self.observe("bad_records", {"batches": len(rejected)})
            self._event("monitor_bad_records", batches=len(rejected), first=rejected[0],
                        expected=self.required[:3] + ["…"] + list(REQUIRED_META))

    def _window_due(self) -> bool:
        if self.reference is None or not len(self.window):
            return False
        if len(self.window) >= self.cfg.window_size:
            return True
        opened = self.state["window_opened"] or self.clock()
        return len(self.window) >= self.cfg.min_window and self.clock() - opened >= self.cfg.window_max_s

    # -- the reference follows the production alias --------------------------------------
    def _follow_production(self) -> None:
        try:
            production = self.registry.get_alias("production")
        except RayMlopsError as exc:
            log.warning("monitor: cannot read the production alias: %s", exc)
            return
        if production is None or (self.reference is not None and self.reference.version == production):
            return
        try:
            reference = Reference.load(self.registry, production, self.schema, self.cfg)
        except (RayMlopsError, ValueError, OSError) as exc:
            self._event("monitor_reference_failed", version=production, error=str(exc)[:500])
            return
        previous, self.reference = self.state["reference_version"], reference
        self.state["reference_version"] = production
        self.stream.streak = 0  # a new model starts a new streak
        self.observe("reference", {"version": production, "previous": previous})
        if previous != production:
            self._event("monitor_reference", version=production, previous=previous, reference=reference.describe())
        self._on_production_moved(production, previous)

    # -- one window --------------------------------------------------------------------
    def _cut_and_test(self) -> dict:
        size = min(len(self.window), self.cfg.window_size)
        window, self.window = self.window.iloc[:size], self.window.iloc[size:].reset_index(drop=True)
        self.state["window_opened"] = self.clock() if len(self.window) else None
        self._remember_keys(window)
        self.labels.refresh()
        index = self.state["windows"] + self.state["skipped_windows"]
        try:
            tested = self.reference.test(self.labels.attach(window))
        except (ValueError, TypeError, KeyError) as exc:  # records of an unexpected type
            self.state["skipped_windows"] += 1
            self._event("monitor_bad_window", index=index, rows=len(window), error=str(exc)[:500])
            return {"index": index, "skipped": True, "error": str(exc)}
        return self._record(index, window, tested)

    def _record(self, index: int, window: pd.DataFrame, tested: WindowTest) -> dict:
        verdict = self.stream.observe(tested.report)
        times = pd.to_datetime(window["time"], utc=True)
        full = {"index": index, "start": times.min().isoformat(), "end": times.max().isoformat(),
                "tested_at": _now_iso(self.clock()), "rows": len(window), "reference_version": self.reference.version,
                "served_versions": sorted(window["model_version"].astype(str).unique().tolist()),
                "drift": verdict.drift, "alarm": verdict.alarm, "streak": verdict.streak,
                "cooling_down": verdict.cooling_down, "p_value": tested.report.p_value,
                "detectors": tested.parts, "labeled": tested.labeled, "accuracy": tested.accuracy, "mae": tested.error,
                "drifted_features": list(verdict.drifted_features),
                "features": {k: _feature_summary(v) for k, v in tested.report.features.items()}}
        self.store.save_verdict(index, full)
        summary = {k: v for k, v in full.items() if k != "features"}
        summary["top_features"] = _top_features(full["features"])
        self.state["windows"] += 1
        self.state["verdicts"] = (self.state["verdicts"] + [summary])[-self.cfg.history:]
        self.observe("window", full)
        self._event("monitor_window", **summary)
        rolled_back = self._probation_window(summary)
        if verdict.alarm and rolled_back:
            self._event("monitor_alarm", window=summary["index"], action="none: production rolled back")
        elif verdict.alarm:
            self._on_alarm(summary)
        return full

    def _remember_keys(self, window: pd.DataFrame) -> None:
        keep = RECENT_KEY_WINDOWS * self.cfg.window_size
        self.state["recent_keys"] = (self.state["recent_keys"] + record_keys(window).tolist())[-keep:]
        self._recent_keys = set(self.state["recent_keys"])

    # -- retraining --------------------------------------------------------------------
    def _on_alarm(self, summary: dict) -> None:
        active = self.state["retrain"]["active"]
        if active is not None:
            self._event("monitor_alarm", window=summary["index"], action="ignored: retraining already running",
                        retrain=active["id"])
            return
        if self.launcher is None or not self.cfg.retrain.enabled:
            self._event("monitor_alarm", window=summary["index"], action="none: retraining disabled")
            return
        streak = [v for v in self.state["verdicts"] if v["index"] > summary["index"] - self.cfg.patience]
        job = {"id": f"r{int(self.clock())}-{uuid.uuid4().hex[:6]}", "trigger_window": summary["index"],
               "onset": min(v["start"] for v in streak), "production_version": self.reference.version,
               "created": _now_iso(self.clock()), "launched": False}
        self.state["retrain"]["active"] = job
        self._checkpoint(force=True)  # write-ahead: a restart resumes this job, never a second one
        self._event("monitor_alarm", window=summary["index"], action="retraining", retrain=job["id"],
                    onset=job["onset"], p_value=summary["p_value"])
        self._launch(job)

    def _launch(self, job: dict) -> None:
        try:
            self.launcher.launch(job)
        except Exception as exc:  # the launch itself failed: record it, production untouched
            self._finish_retrain(job, {"id": job["id"], "status": "failed", "stage": "launch", "error": str(exc)[:500]})
            return
        job["launched"] = True
        self._dirty = True

    def _follow_retrain(self) -> None:
        job = self.state["retrain"]["active"]
        if job is None or self.launcher is None:
            return
        if not job.get("launched"):
            self._launch(job)
            return
        try:
            result = self.launcher.poll(job)
        except Exception as exc:
            log.warning("monitor: cannot poll retraining %s: %s", job["id"], exc)
            return
        if result is not None:
            self._finish_retrain(job, result)

    def _finish_retrain(self, job: dict, result: dict) -> None:
        entry = {**{k: v for k, v in result.items() if k not in ("decision",)},
                 "trigger_window": job["trigger_window"], "onset": job["onset"]}
        if "decision" in result:
            entry["gate"] = {k: result["decision"].get(k) for k in
                             ("promoted", "reason", "metric", "candidate_score", "production_score")}
        self.state["retrain"]["active"] = None
        self.state["retrain"]["history"].append(entry)
        self.observe("retrain", entry)
        self._checkpoint(force=True)

    # -- probation: a version the loop promoted may be rolled back ----------------------
    def _on_production_moved(self, production: str, previous: str | None) -> None:
        book = self.state["probation"]
        active = book["active"]
        if active is not None and active["status"] == ACTIVE and active["version"] != production:
            self._close_probation(Probation.from_state(active), SUPERSEDED, production=production)
        if self.rollback is None or not self.cfg.probation_windows or previous in (None, production):
            return
        if any(p["version"] == production for p in book["history"]):
            return  # at most one probation (and one rollback) per promotion
        try:
            meta = self.registry.metadata(production)
        except RayMlopsError as exc:
            log.warning("monitor: cannot read the metadata of %s: %s", production, exc)
            return
        if not is_loop_promotion(meta, previous):
            return
        windows = self.cfg.probation_windows
        probation = Probation(production, previous, windows=windows, level=self.cfg.alpha / windows,
                              retrain=meta["extra"]["retrain"], reference_accuracy=self.reference.reference_accuracy,
                              started=_now_iso(self.clock()))
        book["active"] = probation.to_state()
        self._dirty = True
        self._event("monitor_probation", action="started", version=production, previous=previous,
                    windows=windows, level=probation.level, reference_accuracy=probation.reference_accuracy)

    def _probation_window(self, summary: dict) -> bool:
        """Count a tested window against the probation; True when it rolled production back."""
        book = self.state["probation"]
        active = book["active"]
        if active is None or active["status"] != ACTIVE or self.reference.version != active["version"]:
            return False
        probation = Probation.from_state(active)
        status = probation.observe(summary)
        if status == PASSED:
            book["consecutive_rollbacks"] = 0
            self._close_probation(probation, PASSED)
            return False
        book["active"] = probation.to_state()
        if status != ROLLING_BACK:
            return False
        self._checkpoint(force=True)  # write-ahead: a restart completes this rollback, never a second one
        self._event("monitor_probation", action="rolling back", version=probation.version,
                    previous=probation.previous, **probation.trigger)
        return self._execute_rollback(probation)

    def _follow_probation(self) -> None:
        """Complete a rollback decided before a restart."""
        active = self.state["probation"]["active"]
        if active is not None and active["status"] == ROLLING_BACK and self.rollback is not None:
            self._execute_rollback(Probation.from_state(active))

    def _execute_rollback(self, probation: Probation) -> bool:
        try:
            outcome = dict(self.rollback(probation.plan()))
        except Exception as exc:  # the action itself broke: recorded, not retried (once per promotion)
            outcome = {"status": "failed", "stage": "action", "error": f"{type(exc).__name__}: {exc}"[:500]}
        probation.outcome = outcome
        status = {ROLLED_BACK: ROLLED_BACK, "skipped": SUPERSEDED}.get(outcome.get("status"), FAILED)
        self._close_probation(probation, status)
        self.observe("rollback", {"outcome": status, "version": probation.version, "target": probation.previous,
                                  **(probation.trigger or {}), "error": outcome.get("error")})
        if status == ROLLED_BACK:
            self._hold_alarms_after_rollback()
        self._checkpoint(force=True)
        if status == ROLLED_BACK:
            self._follow_production()
        return status == ROLLED_BACK

    def _hold_alarms_after_rollback(self) -> None:
        """The drift behind the retraining is still there: no alarm for a (growing) cooldown."""
        book = self.state["probation"]
        book["consecutive_rollbacks"] += 1
        windows = self.cfg.cooldown * 2 ** min(book["consecutive_rollbacks"] - 1, MAX_BACKOFF_DOUBLINGS)
        self.stream.streak, self.stream.cooldown_left = 0, max(self.stream.cooldown_left, windows)

    def _close_probation(self, probation: Probation, status: str, **extra: Any) -> None:
        probation.status = status
        book = self.state["probation"]
        book["active"] = None
        book["history"] = (book["history"] + [{**probation.to_state(), "ended": _now_iso(self.clock()), **extra}])[
            -self.cfg.history:]
        self._dirty = True
        if status != ROLLED_BACK and status != FAILED:
            self._event("monitor_probation", action=status, version=probation.version, previous=probation.previous,
                        windows_seen=probation.seen, windows_tested=probation.tested, **extra)

    # -- state -------------------------------------------------------------------------
    def _resume(self) -> None:
        state = self.store.load_state()
        self.state = state or _fresh_state(self.config)
        self.state.setdefault("probation", _fresh_probation())  # checkpoints from before probation
        self.stream = DriftStream.from_state(self.state["stream"])
        self._recent_keys = set(self.state["recent_keys"])
        self.window = self._empty_window()
        if state is None:  # a first checkpoint at once: a restart always knows where to catch up from
            self._dirty = True
            self._checkpoint(force=True)
            return
        self.state["restarts"] += 1
        saved = self.store.load_window()
        if saved is not None and len(saved):
            self.window = saved
        recovered = self._catch_up(self.state.get("checkpoint_time"))
        self._event("monitor_restarted", restarts=self.state["restarts"], window_rows=len(self.window),
                    recovered=recovered, retrain=(self.state["retrain"]["active"] or {}).get("id"))

    def _empty_window(self) -> pd.DataFrame:
        return pd.DataFrame(columns=self.required)

    def _catch_up(self, since: float | None) -> int:
        """Records the replicas logged since the last checkpoint (lost from memory)."""
        if since is None:
            return 0
        try:
            logged = self.store.read_files(self.store.recent_files(PREDICTIONS_DIR, since - CATCH_UP_SLACK_S))
        except RayMlopsError as exc:
            log.warning("monitor: cannot read the prediction log to catch up: %s", exc)
            return 0
        if logged.empty or self._schema_problem(logged) is not None:
            return 0
        before = self.state["records"]
        self._incoming.append(logged)
        self._merge()
        return self.state["records"] - before

    def _checkpoint(self, force: bool = False) -> None:
        now = self.clock()
        if not force and (not self._dirty or now - self._last_checkpoint < self.cfg.checkpoint_interval_s):
            return
        self.state["stream"] = self.stream.to_state()
        self.state["checkpoint_time"] = now
        try:
            self.store.save_window(self.window)
            self.store.save_state(self.state)
        except RayMlopsError as exc:  # storage down: keep running, retry at the next step
            log.error("monitor: checkpoint failed: %s", exc)
            self.observe("checkpoint_failed", {"error": str(exc)})
            return
        self._dirty, self._last_checkpoint = False, now

    def _event(self, kind: str, **fields: Any) -> None:
        try:
            self.registry.record_event(kind, **fields)
        except RayMlopsError as exc:
            log.error("monitor: cannot record event %s: %s", kind, exc)

    # -- reading -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            queued = sum(len(f) for f in self._incoming)
        state = self.state
        return {"reference": None if self.reference is None else self.reference.describe(),
                "windows": state["windows"], "skipped_windows": state["skipped_windows"],
                "records": state["records"], "open_window_rows": len(self.window) + queued,
                "bad_record_batches": state["bad_records"], "dropped_records": state["dropped_records"],
                "restarts": state["restarts"], "streak": self.stream.streak,
                "cooldown_left": self.stream.cooldown_left, "alarms": len([v for v in state["verdicts"] if v["alarm"]]),
                "last_verdicts": state["verdicts"][-10:], "retrain_active": state["retrain"]["active"],
                "retrain_history": state["retrain"]["history"], "window_size": self.cfg.window_size,
                **probation_status(state)}

    def flush_checkpoint(self) -> None:
        self._merge()
        self._checkpoint(force=True)


def probation_status(state: dict) -> dict[str, Any]:
    """The probation part of a status (also read from a checkpoint when the monitor is down)."""
    book = state.get("probation") or _fresh_probation()
    ended = [p for p in book["history"] if p["status"] in (ROLLED_BACK, FAILED)]
    return {"probation": book["active"], "rollbacks": ended[-5:],
            "rollback_count": sum(p["status"] == ROLLED_BACK for p in book["history"]),
            "consecutive_rollbacks": book["consecutive_rollbacks"]}


def _feature_summary(result: Any) -> dict[str, Any]:
    return {"test": result.test, "p_value": result.p_value, "adjusted_p_value": result.adjusted_p_value,
            "drift": result.drift, "effect_size": result.effect_size, "effect_metric": result.effect_metric}


def _top_features(features: dict[str, dict]) -> dict[str, float]:
    ranked = sorted(features.items(), key=lambda kv: kv[1]["p_value"])[:TOP_FEATURES]
    return {name: f["p_value"] for name, f in ranked}


__all__ = ["Monitor", "Launcher", "probation_status"]
