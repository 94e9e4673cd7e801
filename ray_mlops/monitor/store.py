"""What the monitor keeps in storage, and how it reads the serving logs.

Layout under the storage root::

    monitor/state.json               counters, DriftStream state, verdict summaries,
                                     retraining state and history, recent record keys
    monitor/window.parquet           the open (not yet tested) window
    monitor/windows/<index>.json     every tested window: per-detector and per-feature p-values
    monitor/retrains/<id>.json       a retraining's status, written by the retraining itself

The serving logs are read through :mod:`ray_mlops.contracts` (their layout, writer and
readers are defined there once, shared with serve), so this package never imports the
serving code.
"""

from __future__ import annotations

import io
import logging
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

    def attach(self, window: pd.DataFrame) -> pd.DataFrame:
        """``window`` with a ``label`` column as sent back (int, str or float; NaN where none came back yet)."""
        return window.assign(label=record_keys(window).map(self.labels))


__all__ = ["MonitorStore", "FeedbackIndex", "STATE", "WINDOW", "WINDOWS", "RETRAINS"]
