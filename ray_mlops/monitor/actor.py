"""The monitor on Ray: a named detached actor, and retraining as separate Ray work.

- :class:`MonitorActor` (``ray_mlops_monitor`` in the config's namespace; detached,
  restarted forever, ``num_cpus=0.1``) wraps :class:`~ray_mlops.monitor.core.Monitor`:
  ``receive`` only queues the frame; a background thread does the rest every
  ``monitor.poll_interval_s``. Calls to a restarting actor are retried
  (``max_task_retries=-1``), and the monitor de-duplicates records by key.
- :class:`Retrainer` (``ray_mlops_retrainer``; detached, ``num_cpus=0``) runs
  :func:`~ray_mlops.monitor.retrain.retrain`: its Ray Data and Tune work is scheduled
  like any other. Its outcome comes back through the call's ``ObjectRef``; it is detached
  on purpose: a task would be owned by the monitor and die with it, while this one
  finishes and writes its outcome to ``monitor/retrains/<id>.json`` even if the monitor
  is killed meanwhile; the restarted monitor (whose reference is lost) reads it. The
  fixed name makes a second concurrent retraining impossible.
- Metrics (``ray.util.metrics``): ``ray_mlops_drift_p_value`` (per feature and
  detector), ``ray_mlops_monitor_window_p_value``, ``ray_mlops_monitor_windows``,
  ``ray_mlops_monitor_alarms``, ``ray_mlops_retrains`` (by outcome),
  ``ray_mlops_monitor_bad_records``, ``ray_mlops_monitor_reference_version``,
  ``ray_mlops_rollbacks`` (automatic rollbacks after a failed probation, by outcome).

``swap`` (how a promoted version reaches Serve) is injected by the caller — a callable
object ``swap(config, version)`` (``ray_mlops.loop.ServeSwap``), or an importable
``"module:function"`` path — so this package never imports the serving code. The retrainer uses it after a promotion, the monitor's
probation after a rollback (:func:`~ray_mlops.monitor.probation.roll_back`), the shadow
trial after its online test (:func:`~ray_mlops.monitor.shadow.promote_or_discard`); the
swap object's ``set_shadow(config, version)`` deploys and removes shadows.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import threading
import time
from typing import Any, Callable

import ray

from ray_mlops.config import Config, config_from_dict
from ray_mlops.contracts import MONITOR_ACTOR
from ray_mlops.errors import MonitorError
from ray_mlops.monitor.core import Monitor
from ray_mlops.monitor.probation import roll_back
from ray_mlops.monitor.retrain import retrain
from ray_mlops.monitor.retraining import SHADOWED, RetrainJob
from ray_mlops.monitor.shadow import promote_or_discard
from ray_mlops.monitor.state import MonitorStatus
from ray_mlops.monitor.store import MonitorStore
from ray_mlops.progress import show_progress
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

RETRAINER_ACTOR = "ray_mlops_retrainer"
LOST_AFTER_S = 30.0
FINAL = ("promoted", "rejected", "failed", SHADOWED)


def resolve_callable(target: Callable | str | None) -> Callable | None:
    """A callable, or one named ``"package.module:function"``."""
    if target is None or callable(target):
        return target
    module, _, name = str(target).partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise MonitorError(f"cannot import {target!r}: {exc}") from exc


# -- metrics -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _metrics() -> dict[str, Any]:
    from ray.util.metrics import Counter

    from ray_mlops.telemetry import HeldGauge as Gauge  # stays on the endpoint between windows

    return {
        "p_value": Gauge("ray_mlops_drift_p_value", "raw p-value of the last window, per feature",
                         tag_keys=("feature",)),
        "window_p": Gauge("ray_mlops_monitor_window_p_value", "family p-value of the last window"),
        "windows": Counter("ray_mlops_monitor_windows", "windows tested", tag_keys=("drift",)),
        "alarms": Counter("ray_mlops_monitor_alarms", "confirmed drift (patience reached)"),
        "retrains": Counter("ray_mlops_retrains", "retrainings by outcome", tag_keys=("outcome",)),
        "rollbacks": Counter("ray_mlops_rollbacks", "automatic rollbacks of a promoted version worse in production, "
                             "by outcome", tag_keys=("outcome",)),
        "bad": Counter("ray_mlops_monitor_bad_records", "record batches refused for their schema"),
        "reference": Gauge("ray_mlops_monitor_reference_version", "1 for the production version the monitor tests against",
                           tag_keys=("version",)),
    }


def export_metrics(kind: str, payload: dict) -> None:
    """The monitor's ``observe`` hook: turn its events into ``ray.util.metrics``."""
    m = _metrics()
    if kind == "window":
        m["windows"].inc(1, {"drift": str(bool(payload["drift"])).lower()})
        m["window_p"].set(float(payload["p_value"]))
        for name, feature in payload["features"].items():
            m["p_value"].set(float(feature["p_value"]), {"feature": name})
        if payload["alarm"]:
            m["alarms"].inc(1)
    elif kind == "retrain":
        m["retrains"].inc(1, {"outcome": str(payload.get("status"))})
    elif kind == "rollback":
        m["rollbacks"].inc(1, {"outcome": str(payload.get("outcome"))})
    elif kind == "bad_records":
        m["bad"].inc(payload["batches"])
    elif kind == "reference":
        if payload.get("previous"):
            m["reference"].set(0, {"version": payload["previous"]})
        m["reference"].set(1, {"version": payload["version"]})


def actor_config(config: Config) -> dict[str, Any]:
    """What the monitor and the retraining actors are given of ``config``: all of it but the bearer token.

    They never check a request, and their hot swap only changes the running application's
    ``user_config`` (its token digest stays as deployed), so the token stays with the driver.
    """
    return config.without_secrets().model_dump(mode="json")


# -- retraining as separate Ray work ------------------------------------------------------
@ray.remote(num_cpus=0, max_restarts=0)
class Retrainer:
    """Runs one retraining at a time and writes its outcome to storage."""

    def __init__(self, config: dict, swap: Callable | str | None = None, search: Callable | str | None = None):
        self.config = config_from_dict(config, origin="retrainer args")
        show_progress()  # the stages' progress lines, on this worker's stderr (the driver's, with log_to_driver)
        self.storage = Storage(self.config.storage)
        self.store = MonitorStore(self.storage)
        self.swap = resolve_callable(swap)
        self.search = resolve_callable(search)

    def run(self, job: dict) -> dict:
        status = self.store.retrain_status(job["id"])
        if status is not None:  # already started by this worker (a re-sent call): never twice
            return status
        self.store.save_retrain_status(job["id"], {"id": job["id"], "status": "running", "started": time.time()})
        kwargs = {"swap": self.swap} | ({"search": self.search} if self.search else {})
        try:
            outcome = retrain(self.config, self.storage, job, **kwargs)
        except Exception as exc:  # even recording failed: still leave a final status
            outcome = {"id": job["id"], "status": "failed", "stage": "retrain", "error": f"{type(exc).__name__}: {exc}"}
        self.store.save_retrain_status(job["id"], outcome)
        return outcome


class RayLauncher:
    """Launches :class:`Retrainer` work; its outcome comes back through the call's ``ObjectRef``.

    A monitor restarted meanwhile has lost the reference: it follows the job through the
    status the retraining writes to storage (``monitor/retrains/<id>.json``) instead.
    """

    def __init__(self, config: Config, storage: Storage, swap: Callable | str | None, search: Callable | str | None):
        self.config, self.store = config, MonitorStore(storage)
        self.swap, self.search = swap, search
        self._launched_at: dict[str, float] = {}
        self._refs: dict[str, Any] = {}

    def _actor(self, create: bool) -> Any:
        try:
            return ray.get_actor(RETRAINER_ACTOR, namespace=self.config.ray.namespace)
        except ValueError:
            if not create:
                return None
        return Retrainer.options(name=RETRAINER_ACTOR, namespace=self.config.ray.namespace, lifetime="detached",
                                 get_if_exists=True).remote(actor_config(self.config), self.swap, self.search)

    def launch(self, job: RetrainJob) -> None:
        if self.store.retrain_status(job.id) is not None:
            return  # it started before a monitor restart: follow it, never start it twice
        self._refs[job.id] = self._actor(create=True).run.remote(job.to_dict())
        self._launched_at[job.id] = time.time()

    def poll(self, job: RetrainJob) -> dict | None:
        ref = self._refs.get(job.id)
        if ref is not None:
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                return None  # still running
            self._refs.pop(job.id, None)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError:  # the worker died: what did it leave in storage?
                outcome = None
            if outcome is not None and outcome.get("status") in FINAL:
                self._release()
                return outcome
        status = self.store.retrain_status(job.id)
        if status is not None and status.get("status") in FINAL:
            self._release()
            return status
        if self._actor(create=False) is not None:
            return None
        waited = time.time() - self._launched_at.setdefault(job.id, time.time())
        if waited < LOST_AFTER_S:
            return None
        return {"id": job.id, "status": "failed", "stage": "lost",
                "error": "the retraining worker is gone without an outcome (node lost or killed)"}

    def _release(self) -> None:
        actor = self._actor(create=False)
        if actor is not None:
            ray.kill(actor, no_restart=True)


# -- the monitor actor ---------------------------------------------------------------------
@ray.remote(num_cpus=0.1, max_restarts=-1, max_task_retries=-1)
class MonitorActor:
    """The detached drift monitor (see the module docstring)."""

    def __init__(self, config: dict, swap: Callable | str | None = None, search: Callable | str | None = None):
        self.config = config_from_dict(config, origin="monitor args")
        storage = Storage(self.config.storage)
        launcher = RayLauncher(self.config, storage, swap, search)
        rollback = _rollback_action(self.config, storage, swap)
        self.monitor = Monitor(self.config, storage, launcher=launcher, rollback=rollback,
                               shadow_action=_shadow_action(self.config, storage, swap), observe=_safe(export_metrics))
        self._stop = threading.Event()
        self._stepping = threading.Lock()  # the step thread and a checkpoint call never mutate the monitor at once
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name="monitor-step", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.config.monitor.poll_interval_s):
            try:
                with self._stepping:
                    self.monitor.step()
            except Exception:  # never let one bad step stop the monitor
                self.errors += 1
                log.exception("monitor step failed")

    def receive(self, records: Any) -> int:
        return self.monitor.receive(records)

    def status(self) -> MonitorStatus:
        return dataclasses.replace(self.monitor.status(), step_errors=self.errors, alive=self._thread.is_alive(),
                                   node_id=ray.get_runtime_context().get_node_id())

    def ping(self) -> str:
        return "ok"

    def checkpoint(self) -> None:
        """Write the open window and state now (e.g. before a planned stop)."""
        with self._stepping:
            self.monitor.flush_checkpoint()


def _rollback_action(config: Config, storage: Storage, swap: Callable | str | None) -> Callable[[dict], dict]:
    """Probation's action: registry rollback, then the injected swap (resolved when needed)."""
    def action(plan: dict) -> dict:
        return roll_back(config, storage, plan, swap=resolve_callable(swap))

    return action


def _shadow_action(config: Config, storage: Storage, swap: Callable | str | None) -> Callable[[dict], dict]:
    """The shadow trial's action: promote (registry, then the swap) or discard (remove the shadow from Serve)."""
    def action(plan: dict) -> dict:
        return promote_or_discard(config, storage, plan, swap=resolve_callable(swap))

    return action


def _safe(fn: Callable[[str, dict], None]) -> Callable[[str, dict], None]:
    def wrapped(kind: str, payload: dict) -> None:
        try:
            fn(kind, payload)
        except Exception as exc:  # metrics must never break the monitor
            log.warning("monitor metrics: %s", exc)

    return wrapped


# -- handles -------------------------------------------------------------------------------
def start_monitor(config: Config, *, swap: Callable | str | None = None, search: Callable | str | None = None,
                  timeout_s: float = 60.0) -> Any:
    """Start the monitor (or return the running one): idempotent. Connect to Ray first."""
    actor = MonitorActor.options(name=MONITOR_ACTOR, namespace=config.ray.namespace, lifetime="detached",
                                 get_if_exists=True).remote(actor_config(config), swap, search)
    try:
        ray.get(actor.ping.remote(), timeout=timeout_s)
    except (ray.exceptions.RayError, TimeoutError) as exc:
        raise MonitorError(f"the monitor did not start: {exc}") from exc
    return actor


def get_monitor(config: Config) -> Any | None:
    """The running monitor actor, or None."""
    try:
        return ray.get_actor(MONITOR_ACTOR, namespace=config.ray.namespace)
    except ValueError:
        return None


def stop_monitor(config: Config) -> bool:
    """Checkpoint and kill the monitor and any retraining; True if a monitor was running.

    The only way the monitor is stopped (``ray-mlops shutdown`` goes through it): its open
    window and state are written first, so a later start resumes from them.
    """
    actor = get_monitor(config)
    if actor is not None:
        try:
            ray.get(actor.checkpoint.remote(), timeout=10)
        except (ray.exceptions.RayError, TimeoutError) as exc:  # stopping anyway: the log still has the records
            log.warning("monitor: last checkpoint failed before the stop: %s", exc)
        ray.kill(actor, no_restart=True)
    try:
        ray.kill(ray.get_actor(RETRAINER_ACTOR, namespace=config.ray.namespace), no_restart=True)
    except ValueError:
        pass
    return actor is not None


__all__ = ["MonitorActor", "Retrainer", "actor_config", "start_monitor", "get_monitor", "stop_monitor", "export_metrics",
           "MONITOR_ACTOR", "RETRAINER_ACTOR", "resolve_callable"]
