"""Application metrics through Ray's own exporter (``ray.util.metrics``).

Every metric is named ``ray_mlops_*``; Ray's Prometheus endpoint (``--metrics-export-port``
on every node) adds its ``ray_`` prefix, and counters get ``_total``: the counter
``ray_mlops_registry_events`` is scraped as ``ray_ray_mlops_registry_events_total``.
``configs/grafana/ray_mlops_dashboard.json`` charts them.

Recording is a no-op in a process that is not connected to Ray (``ray-mlops registry
promote`` on a laptop, a unit test), and a metric that cannot be recorded never fails the
operation it describes.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

PROMETHEUS_PREFIX = "ray_"


def prometheus_name(name: str, kind: str) -> str:
    """The name a ``ray.util.metrics`` metric is scraped under.

    >>> prometheus_name("ray_mlops_requests", "counter"), prometheus_name("ray_mlops_latency_ms", "histogram")
    ('ray_ray_mlops_requests_total', 'ray_ray_mlops_latency_ms_bucket')
    """
    suffix = {"counter": "_total", "histogram": "_bucket"}.get(kind, "")
    return f"{PROMETHEUS_PREFIX}{name}{suffix}"


def _session() -> str | None:
    """This process's Ray job id, or ``None`` when it is not connected to Ray."""
    ray = sys.modules.get("ray")  # never import Ray just to find out it is not running
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_job_id()


@functools.lru_cache(maxsize=None)
def _counter(session: str, name: str, description: str, tag_keys: tuple[str, ...]) -> Any:
    from ray.util.metrics import Counter

    return Counter(name, description, tag_keys=tag_keys)


def count(name: str, description: str, tags: dict[str, str], value: float = 1.0) -> None:
    """Add ``value`` to the counter ``name`` with ``tags``, when connected to Ray."""
    session = _session()
    if session is None:
        return
    try:
        _counter(session, name, description, tuple(sorted(tags))).inc(value, tags)
    except Exception as exc:  # noqa: BLE001 - telemetry never fails the operation it counts
        log.warning("metric %s not recorded: %s", name, exc)


class HeldGauge:
    """A ``ray.util.metrics.Gauge`` that stays on the Prometheus endpoint between updates.

    Ray drops a gauge's series from a node's endpoint about 20 s after its last ``set``
    (its exporter evicts stale gauge observations), so a value set once — the version a
    replica serves, the last window's p-values — would vanish from Grafana. This one
    remembers its last value per tag set and a background thread of the process sets
    them again every :data:`HOLD_INTERVAL_S`.
    """

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] = ()):
        from ray.util.metrics import Gauge

        self._gauge = Gauge(name, description, tag_keys=tag_keys)
        self._values: dict[tuple[tuple[str, str], ...], float] = {}
        self._lock = threading.Lock()
        _hold(self)

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        key = tuple(sorted((tags or {}).items()))
        with self._lock:
            self._values[key] = float(value)
        self._gauge.set(float(value), dict(key) or None)

    def refresh(self) -> None:
        with self._lock:
            values = list(self._values.items())
        for key, value in values:
            self._gauge.set(value, dict(key) or None)


HOLD_INTERVAL_S = 5.0
_HELD: list[HeldGauge] = []
_HELD_LOCK = threading.Lock()


def _hold(gauge: HeldGauge) -> None:
    with _HELD_LOCK:
        _HELD.append(gauge)
        if len(_HELD) == 1:
            threading.Thread(target=_refresh_forever, name="ray-mlops-gauges", daemon=True).start()


def _refresh_forever() -> None:
    while True:
        time.sleep(HOLD_INTERVAL_S)
        with _HELD_LOCK:
            gauges = list(_HELD)
        for gauge in gauges:
            try:
                gauge.refresh()
            except Exception as exc:  # noqa: BLE001 - telemetry never fails the process
                log.warning("gauge not refreshed: %s", exc)


__all__ = ["count", "prometheus_name", "PROMETHEUS_PREFIX", "HeldGauge"]
