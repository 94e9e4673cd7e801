"""What the monitor keeps in storage, and how it reads the serving logs.

Layout under the storage root::

    monitor/state.json               counters, DriftStream state, verdict summaries,
                                     retraining state and history, recent record keys
    monitor/window.parquet           the open (not yet tested) window
    monitor/windows/<index>.json     every tested window: per-detector and per-feature p-values
    monitor/retrains/<id>.json       a retraining's status, written by the retraining itself
    monitor/events/date=…/hour=…/<time>-<kind>-<id>.json
                                     the monitor's event log: window verdicts, alarms, probation,
                                     restarts, the retraining lifecycle (one object per event,
                                     partitioned by hour; the registry's log keeps only
                                     register, gate, alias, promote and rollback)

:meth:`MonitorStore.recent_events` reads a bounded number of objects whatever the
history length: it lists the newest hour partitions and reads only the matching last
events (the kind is in the file name).

The serving logs are read through :mod:`ray_mlops.contracts` (their layout, writer and
readers are defined there once, shared with serve), so this package never imports the
serving code.
"""

from __future__ import annotations

import io
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from ray_mlops.contracts import FEEDBACK_DIR, parquet_bytes, read_files, recent_files, record_keys
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

ROOT = "monitor"
STATE = f"{ROOT}/state.json"
WINDOW = f"{ROOT}/window.parquet"
WINDOWS = f"{ROOT}/windows"
RETRAINS = f"{ROOT}/retrains"
EVENTS = f"{ROOT}/events"
RECENT_EVENT_PARTITIONS = 48
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


class MonitorStore:
    """Reads and writes the monitor's files under one :class:`Storage`."""

    def __init__(self, storage: Storage):
        self.storage = storage

    # -- state ------------------------------------------------------------------------
    def load_state(self) -> dict | None:
        return self.storage.read_json(STATE) if self.storage.exists(STATE) else None

    def save_state(self, state: dict) -> None:
        self.storage.write_json(STATE, state)

    def load_window(self) -> pd.DataFrame | None:
        if not self.storage.exists(WINDOW):
            return None
        return pd.read_parquet(io.BytesIO(self.storage.read_bytes(WINDOW)))

    def save_window(self, frame: pd.DataFrame) -> None:
        self.storage.write_bytes(WINDOW, parquet_bytes(frame))

    def save_verdict(self, index: int, verdict: dict) -> None:
        self.storage.write_json(f"{WINDOWS}/{index:08d}.json", verdict)

    def verdicts(self) -> list[dict]:
        """Every tested window's verdict, oldest first."""
        names = [n for n in self.storage.list(WINDOWS) if n.endswith(".json")]
        return [self.storage.read_json(f"{WINDOWS}/{n}") for n in names]

    # -- the monitor's event log -----------------------------------------------------
    def record_event(self, kind: str, **fields: Any) -> dict:
        """Append one event to the monitor's log (one small object, under its hour)."""
        if not _KIND.match(kind):
            raise ValueError(f"invalid event kind {kind!r}: lowercase letters, digits and '_'")
        micros = self._tick()
        moment = datetime.fromtimestamp(micros / 1e6, timezone.utc)
        event = {**fields, "kind": kind, "time": moment.isoformat(),
                 "id": f"{micros:017d}-{kind}-{uuid.uuid4().hex[:8]}"}
        self.storage.write_json(f"{EVENTS}/{moment:date=%Y-%m-%d/hour=%H}/{event['id']}.json", event)
        return event

    def _tick(self) -> int:
        """Microseconds now, strictly increasing for this store (events of one writer keep their order)."""
        self._last_micros = max(int(time.time() * 1e6), getattr(self, "_last_micros", 0) + 1)
        return self._last_micros

    def events(self, kind: str | None = None) -> list[dict]:
        """Every event of the log (of ``kind`` when given), oldest first: reads the whole history."""
        rels = [rel for part in self._partitions() for rel in self._names(part)]
        return [self.storage.read_json(rel) for rel in rels if kind is None or _kind_of(rel) == kind]

    def recent_events(self, kinds: tuple[str, ...], limit: int) -> list[dict]:
        """The last ``limit`` events of ``kinds`` in the newest partitions, oldest first (bounded reads)."""
        found: list[str] = []
        for partition in reversed(self._partitions()[-RECENT_EVENT_PARTITIONS:]):
            found = [rel for rel in self._names(partition) if _kind_of(rel) in kinds] + found
            if len(found) >= limit:
                break
        return [self.storage.read_json(rel) for rel in found[-limit:]]

    def _partitions(self) -> list[str]:
        return [f"{EVENTS}/{date}/{hour}" for date in self.storage.list(EVENTS)
                for hour in self.storage.list(f"{EVENTS}/{date}")]

    def _names(self, partition: str) -> list[str]:
        return [f"{partition}/{n}" for n in self.storage.list(partition) if n.endswith(".json")]

    # -- retraining status (written by the retraining, read by the monitor) -----------
    def retrain_status(self, job_id: str) -> dict | None:
        rel = f"{RETRAINS}/{job_id}.json"
        return self.storage.read_json(rel) if self.storage.exists(rel) else None

    def save_retrain_status(self, job_id: str, status: dict) -> None:
        self.storage.write_json(f"{RETRAINS}/{job_id}.json", status)

    # -- the serving logs -------------------------------------------------------------
    def recent_files(self, folder: str, since: float | None = None) -> list[pafs.FileInfo]:
        """Files in the newest partitions of a serving log (:func:`ray_mlops.contracts.recent_files`)."""
        return recent_files(self.storage, folder, since)

    def read_files(self, infos: list[pafs.FileInfo]) -> pd.DataFrame:
        return read_files(self.storage, infos)


def _kind_of(rel: str) -> str:
    """The kind in an event file's name (``<time>-<kind>-<id>.json``)."""
    return rel.rsplit("/", 1)[-1].split("-", 1)[1].rsplit("-", 1)[0]


class FeedbackIndex:
    """Labels that came back through ``/feedback``, by record key, read incrementally."""

    def __init__(self, store: MonitorStore, capacity: int = 200_000):
        self.store, self.capacity = store, capacity
        self.labels: dict[str, Any] = {}
        self._seen: set[str] = set()

    def refresh(self) -> int:
        """Read feedback files not read before; returns how many labels were added."""
        fresh = [i for i in self.store.recent_files(FEEDBACK_DIR) if i.path not in self._seen]
        frame = self.store.read_files(fresh)
        self._seen.update(i.path for i in fresh)
        if frame.empty:
            return 0
        self.labels.update(zip(record_keys(frame), frame["label"]))
        while len(self.labels) > self.capacity:
            self.labels.pop(next(iter(self.labels)))
        return len(frame)

    def lookup(self, keys: pd.Series) -> pd.Series:
        """The label of each record key (NaN where none came back yet)."""
        return keys.map(self.labels)

    def attach(self, window: pd.DataFrame) -> pd.DataFrame:
        """``window`` with a ``label`` column as sent back (int, str or float; NaN where none came back yet)."""
        return window.assign(label=record_keys(window).map(self.labels))


__all__ = ["MonitorStore", "FeedbackIndex", "STATE", "WINDOW", "WINDOWS", "RETRAINS", "EVENTS"]
