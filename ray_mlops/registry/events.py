"""The registry's append-only event log: register, gate, alias, promote, rollback.

One small JSON object per event under ``registry/<model>/events/``, named by a strictly
increasing timestamp so a listing is in order; that works on object stores, where nothing
can be appended to. Monitor events (window verdicts, alarms, retraining) are not here:
they go to the monitor's own log (:mod:`ray_mlops.monitor.store`).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any

from ray_mlops import telemetry
from ray_mlops.errors import RegistryError
from ray_mlops.registry.artifacts import now
from ray_mlops.storage import Storage

EVENTS_METRIC = "ray_mlops_registry_events"  # a counter, tagged model and kind
_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class EventLog:
    """The events under ``root/events/`` of ``storage``."""

    _clock_lock = threading.Lock()
    _last_ns = 0

    def __init__(self, storage: Storage, root: str, model_name: str):
        self.storage, self.model_name = storage, model_name
        self.folder = f"{root}/events"

    @classmethod
    def _tick(cls) -> int:
        """Strictly increasing nanoseconds within this process (wall clock across them)."""
        with cls._clock_lock:
            cls._last_ns = max(time.time_ns(), cls._last_ns + 1)
            return cls._last_ns

    def record(self, kind: str, **fields: Any) -> dict:
        """Append an event of ``kind`` (lowercase letters, digits, ``_``) and return it."""
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise RegistryError(f"invalid event kind {kind!r}: lowercase letters, digits and '_'")
        stamp = self._tick()
        event = {**fields, "kind": kind, "model_name": self.model_name, "time": now(),
                 "id": f"{stamp:020d}-{uuid.uuid4().hex[:12]}"}
        self.storage.write_json(f"{self.folder}/{event['id']}.json", event)
        telemetry.count(EVENTS_METRIC, "registry events (register, promote, rollback, gate...) by model and kind",
                        {"model": self.model_name, "kind": kind})
        return event

    def read(self, kind: str | None = None, *, last: int | None = None) -> list[dict]:
        """Recorded events, oldest first; only those of ``kind`` when given; of the ``last`` ones when given."""
        names = [n for n in self.storage.list(self.folder) if n.endswith(".json")]
        names = names if last is None else names[-last:]
        found = [self.storage.read_json(f"{self.folder}/{n}") for n in names]
        return [e for e in found if kind is None or e.get("kind") == kind]
