"""The composition root of the closed loop: serving + monitor + retraining, wired together.

The monitor never imports the serving code; this module injects :class:`ServeSwap` (a
callable object, pickled into the monitor actor's arguments, so a restarted monitor gets it
back) and gathers the status of every stage for ``ray-mlops status`` (:class:`LoopStatus`).

>>> SWAP
ServeSwap()
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ray_mlops.config import Config
from ray_mlops.errors import RayMlopsError
from ray_mlops.monitor.state import MonitorStatus
from ray_mlops.monitor.store import MonitorStore
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage

RETRAIN_EVENTS = ("retrain_started", "retrain_finished", "retrain_failed")
RECENT_REGISTRY_EVENTS = 50


def swap_serving(config: Config, version: str) -> str | None:
    """Hot-swap the running application to ``version``; None when nothing is deployed."""
    from ray_mlops.serve import deploy

    if deploy.status(config).get("status") == "NOT_DEPLOYED":
        return None
    return deploy.swap(config, version)


class ServeSwap:
    """How a promoted (or rolled-back-to) version reaches Serve: ``swap(config, version)``;
    how a candidate goes into (or out of) shadow: ``set_shadow(config, version or None)``.

    Injected into the monitor (its retrainings, its shadow trials and its probation) by
    :func:`start_monitor`. Both return None when no application is deployed.
    """

    def __call__(self, config: Config, version: str) -> str | None:
        return swap_serving(config, version)

    def set_shadow(self, config: Config, version: str | None) -> str | None:
        from ray_mlops.serve import deploy

        if deploy.status(config).get("status") == "NOT_DEPLOYED":
            return None
        return deploy.set_shadow(config, version)

    def __repr__(self) -> str:
        return "ServeSwap()"


SWAP = ServeSwap()


def start_monitor(config: Config, **kwargs: Any) -> Any:
    """Start (idempotently) the detached monitor with the Serve hot swap injected."""
    from ray_mlops.monitor.actor import start_monitor as start

    return start(config, swap=kwargs.pop("swap", SWAP), **kwargs)


def shutdown(config: Config) -> dict[str, bool]:
    """Remove the application, then stop the monitor (and any retraining) in order.

    The replicas flush their last records to the monitor while the app is removed; then
    :func:`~ray_mlops.monitor.actor.stop_monitor`, the only way the monitor is stopped,
    takes its last checkpoint and kills it.
    """
    from ray_mlops.monitor.actor import stop_monitor
    from ray_mlops.serve import deploy

    done = deploy.shutdown(config)
    done["monitor_stopped"] = stop_monitor(config)
    return done


def _serving(config: Config) -> dict[str, Any]:
    from ray_mlops.serve import deploy

    try:
        return deploy.status(config)
    except Exception as exc:  # Serve not running or unreachable
        return {"status": "UNKNOWN", "error": str(exc)[:200]}


def monitor_status(config: Config, storage: Storage) -> MonitorStatus:
    """The running monitor's status, else the one its last checkpoint gives."""
    import ray

    from ray_mlops.monitor.actor import get_monitor
    from ray_mlops.monitor.state import MonitorState

    actor = get_monitor(config) if ray.is_initialized() else None
    if actor is not None:
        try:
            return ray.get(actor.status.remote(), timeout=15)
        except (ray.exceptions.RayError, TimeoutError) as exc:
            return MonitorStatus.down(str(exc)[:200])
    state = MonitorStore(storage).load_state()
    return MonitorStatus.down() if state is None else MonitorStatus.of(MonitorState.from_json(state), running=False)


@dataclass
class RegistryStatus:
    """The registry's aliases and its last promotions and rollbacks."""

    aliases: dict[str, str] = field(default_factory=dict)
    promotions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass
class LoopStatus:
    """Every stage of the loop at a glance: what ``ray-mlops status`` prints (table or ``--json``)."""

    model: str
    storage: str
    registry: RegistryStatus
    serving: dict[str, Any]
    monitor: MonitorStatus
    retrains: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``--json``."""
        return asdict(self)


def status(config: Config, *, with_ray: bool = True, storage: Storage | None = None) -> LoopStatus:
    """Serving version and replicas, registry aliases, monitor windows and verdicts, retrain history,
    probation and rollbacks; reads a bounded number of objects, whatever the history length."""
    storage = storage or Storage(config.storage)
    registry = Registry(storage, config.model_name)
    try:
        aliases, events = registry.aliases(), registry.events(last=RECENT_REGISTRY_EVENTS)
        retrains = MonitorStore(storage).recent_events(RETRAIN_EVENTS, 10)
    except RayMlopsError as exc:
        aliases, events, retrains, registry_error = {}, [], [], str(exc)
    else:
        registry_error = None
    promotions = [e for e in events if e.get("kind") in ("promote", "rollback")][-10:]
    serving = _serving(config) if with_ray else {"status": "not queried (pass --address to reach a running Ray)"}
    return LoopStatus(model=config.model_name, storage=storage.location,
                      registry=RegistryStatus(aliases, promotions, registry_error), serving=serving,
                      monitor=monitor_status(config, storage), retrains=retrains)


__all__ = ["swap_serving", "start_monitor", "shutdown", "status", "monitor_status", "LoopStatus", "RegistryStatus",
           "SWAP"]
