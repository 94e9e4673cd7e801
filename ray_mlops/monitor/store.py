"""What the monitor keeps in storage, and how it reads the serving logs.

Layout under the storage root::

    monitor/state.json               counters, DriftStream state, verdict summaries,
                                     retraining state and history, recent record keys
    monitor/window.parquet           the open (not yet tested) window
    monitor/windows/<index>.json     every tested window: per-detector and per-feature p-values
    monitor/retrains/<id>.json       a retraining's status, written by the retraining itself

The serving logs are read by their documented layout (``predictions/`` and
``feedback/``, hive-partitioned by ``date=…/hour=…``; see ``ray_mlops.serve.predlog``),
so this package never imports the serving code.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_mlops.errors import StorageError
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

ROOT = "monitor"
STATE = f"{ROOT}/state.json"
WINDOW = f"{ROOT}/window.parquet"
WINDOWS = f"{ROOT}/windows"
RETRAINS = f"{ROOT}/retrains"
PREDICTIONS_DIR = "predictions"
FEEDBACK_DIR = "feedback"
RECENT_PARTITIONS = 2


def record_keys(frame: pd.DataFrame) -> pd.Series:
    """``request_id:row`` of each prediction record (how labels find their prediction)."""
    return frame["request_id"].astype(str) + ":" + frame["row"].astype(str)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


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
        """Files in the newest ``date=…/hour=…`` partitions, modified at or after ``since``."""
        partitions = []
        for date in self.storage.list(folder)[-RECENT_PARTITIONS:]:
            partitions += [f"{folder}/{date}/{hour}" for hour in self.storage.list(f"{folder}/{date}")]
        infos = []
        for part in partitions[-RECENT_PARTITIONS:]:
            selector = pafs.FileSelector(self.storage.path(part), allow_not_found=True)
            try:
                infos += [i for i in self.storage.fs.get_file_info(selector)
                          if i.type == pafs.FileType.File and i.path.endswith(".parquet")]
            except (pa.ArrowException, OSError) as exc:
                raise StorageError(f"cannot list {self.storage.uri(part)}: {exc}") from exc
        if since is not None:
            infos = [i for i in infos if i.mtime is None or i.mtime.timestamp() >= since]
        return sorted(infos, key=lambda i: i.path)

    def read_files(self, infos: list[pafs.FileInfo]) -> pd.DataFrame:
        frames = []
        for info in infos:
            try:
                with self.storage.fs.open_input_file(info.path) as handle:
                    frames.append(pq.read_table(handle).to_pandas())
            except (pa.ArrowException, OSError) as exc:  # a file being replaced: skip, read next time
                log.warning("monitor: cannot read %s: %s", info.path, exc)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_partitioned(storage: Storage, folder: str, since: str | None = None) -> pd.DataFrame:
    """The rows under a hive-partitioned log folder (predictions or feedback).

    With ``since`` (an ISO time), only the ``date=…/hour=…`` partitions from that hour
    (UTC) on are read: a retraining reads the days since drift began, not the whole log.
    """
    import pyarrow.dataset as pads

    if not storage.exists(folder):
        return pd.DataFrame()
    partitioning = pads.partitioning(pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive")
    dataset = pads.dataset(storage.path(folder), filesystem=storage.fs, format="parquet",
                           partitioning=partitioning, exclude_invalid_files=True)
    table = dataset.to_table(filter=_from_hour(since)) if since is not None else dataset.to_table()
    frame = table.to_pandas()
    return frame.drop(columns=[c for c in ("date", "hour") if c in frame.columns])


def _from_hour(since: str) -> Any:
    """A dataset filter keeping the partitions of ``since``'s UTC hour and later."""
    import pyarrow.dataset as pads

    stamp = pd.Timestamp(since)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    date, hour = f"{stamp:%Y-%m-%d}", f"{stamp:%H}"
    return (pads.field("date") > date) | ((pads.field("date") == date) & (pads.field("hour") >= hour))


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


__all__ = ["MonitorStore", "FeedbackIndex", "record_keys", "read_partitioned", "parquet_bytes",
           "STATE", "WINDOW", "WINDOWS", "RETRAINS", "PREDICTIONS_DIR", "FEEDBACK_DIR"]
