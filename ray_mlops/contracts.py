"""What serve and the monitor share: the actor name, the log layout, its writer and readers.

Serve (:mod:`ray_mlops.serve.predlog`) writes, the monitor (:mod:`ray_mlops.monitor`)
reads; both import these definitions from here and nowhere else (docs/ARCHITECTURE.md,
"Contracts").

**The monitor actor** is the named detached actor :data:`MONITOR_ACTOR` in the config's
Ray namespace; a replica hands it frames of prediction records (``receive``).

**The prediction log**: one row per prediction, the featurized inputs (the feature
table's columns) plus :data:`META_COLUMNS`: ``request_id``, ``row`` (the instance's
index in its request), ``entity`` (the key the client sent, or null),
``model_version``, ``prediction``, ``probabilities`` (per class; null for regression)
and ``time`` (UTC). The monitor needs :data:`REQUIRED_META` of them. While a shadow
version is loaded beside production, each row also carries :data:`SHADOW_COLUMNS`:
``shadow_version``, ``shadow_prediction`` and ``shadow_probabilities`` (the candidate's
outputs on the same features; production's answer is the one returned), and
:data:`CANARY_COLUMN` (``canary``): True where the request was a canary, answered by the
shadow (``serve.canary_fraction``); ``prediction`` stays production's either way. Logs written
before shadows existed, or batches the shadow was dropped from, lack them or hold nulls:
:func:`with_shadow_columns` gives any frame the full set, and :func:`read_partitioned`
unifies the files' schemas, so old and new files read together.

**The feedback log**: ``request_id``, ``row``, ``label`` and ``time``; labels join
predictions on :func:`record_keys` (``request_id:row``).

Both logs are Parquet files partitioned by hour::

    <storage>/predictions/date=YYYY-MM-DD/hour=HH/<writer>-<seq>.parquet
    <storage>/feedback/date=YYYY-MM-DD/hour=HH/<writer>-<seq>.parquet

>>> partition_of(pd.Timestamp("2026-11-27T09:30:00Z"))
'date=2026-11-27/hour=09'
>>> record_keys(pd.DataFrame({"request_id": ["a", "a"], "row": [0, 1]})).tolist()
['a:0', 'a:1']
"""

from __future__ import annotations

import io
import logging
import posixpath
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ray_mlops.errors import StorageError
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

MONITOR_ACTOR = "ray_mlops_monitor"
PREDICTIONS_DIR = "predictions"
FEEDBACK_DIR = "feedback"
META_COLUMNS = ("request_id", "row", "entity", "model_version", "prediction", "probabilities", "time")
REQUIRED_META = ("request_id", "row", "model_version", "prediction", "time")
SHADOW_COLUMNS = ("shadow_version", "shadow_prediction", "shadow_probabilities")
CANARY_COLUMN = "canary"  # True on the rows of a request the shadow answered (serve.canary_fraction)
FEEDBACK_COLUMNS = ("request_id", "row", "label", "time")
RECENT_PARTITIONS = 2


def partition_of(stamp: pd.Timestamp) -> str:
    """``date=YYYY-MM-DD/hour=HH`` of a UTC timestamp."""
    return f"date={stamp:%Y-%m-%d}/hour={stamp:%H}"


def record_keys(frame: pd.DataFrame) -> pd.Series:
    """``request_id:row`` of each prediction or feedback record (how labels find their prediction)."""
    return frame["request_id"].astype(str) + ":" + frame["row"].astype(str)


def with_shadow_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with every :data:`SHADOW_COLUMNS` column and :data:`CANARY_COLUMN` (null where a
    record has no shadow output).

    >>> list(with_shadow_columns(pd.DataFrame({"prediction": [1]})).columns)
    ['prediction', 'shadow_version', 'shadow_prediction', 'shadow_probabilities', 'canary']
    """
    missing = [c for c in (*SHADOW_COLUMNS, CANARY_COLUMN) if c not in frame.columns]
    return frame.assign(**{c: pd.Series(None, index=frame.index, dtype=object) for c in missing}) if missing else frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as one Parquet file, without its index."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


# -- the writer ----------------------------------------------------------------------------
class PartitionedWriter:
    """Writes frames under ``<folder>/date=…/hour=…/<writer>-<seq>.parquet``, atomically."""

    def __init__(self, storage: Storage, folder: str, writer: str):
        self.storage, self.folder, self.writer = storage, folder, writer
        self._seq = 0
        self._lock = threading.Lock()

    def write(self, frame: pd.DataFrame) -> list[str]:
        """One file per hour present in ``frame["time"]``; returns the files written."""
        written = []
        hours = frame["time"].dt.floor("h")
        for hour, part in frame.groupby(hours, sort=True):
            with self._lock:
                self._seq += 1
                seq = self._seq
            rel = f"{self.folder}/{partition_of(hour)}/{self.writer}-{seq:08d}.parquet"
            self.storage.write_bytes(rel, parquet_bytes(part.reset_index(drop=True)))
            written.append(rel)
        return written


# -- the readers ---------------------------------------------------------------------------
def read_log(storage: Storage, folder: str = PREDICTIONS_DIR) -> pd.DataFrame:
    """Every row of the prediction (or feedback) log under ``storage``, oldest first."""
    frame = read_partitioned(storage, folder)
    if frame.empty:
        return pd.DataFrame(columns=list(META_COLUMNS if folder == PREDICTIONS_DIR else FEEDBACK_COLUMNS))
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def read_partitioned(storage: Storage, folder: str, since: str | None = None) -> pd.DataFrame:
    """The rows under a hive-partitioned log folder (predictions or feedback).

    With ``since`` (an ISO time), only the ``date=…/hour=…`` partitions from that hour
    (UTC) on are read: a retraining reads the days since drift began, not the whole log.
    The files are listed once and read concurrently (a log is many small files and each
    read is a round trip on an object store); their schemas are unified by column name.
    """
    first = None if since is None else partition_of(_utc(pd.Timestamp(since)))
    base = storage.path(folder)
    try:
        listed = storage.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(f"cannot list {storage.uri(folder)}: {exc}") from exc
    files = [info for info in listed if info.type == pafs.FileType.File
             and (partition := _partition(posixpath.relpath(info.path, base))) is not None
             and (first is None or partition >= first)]
    tables = _read_tables(storage.fs, sorted(files, key=lambda info: info.path))
    if not tables:
        return pd.DataFrame()
    return pa.concat_tables(tables, promote_options="permissive").to_pandas()


def _utc(stamp: pd.Timestamp) -> pd.Timestamp:
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _partition(rel: str) -> str | None:
    """``date=…/hour=…`` of a log file's path below its folder; None for anything else.

    >>> _partition("date=2026-11-27/hour=09/w-00000001.parquet")
    'date=2026-11-27/hour=09'
    >>> _partition("date=2026-11-27/hour=09/w-00000001.parquet.tmp-1f2e") is None
    True
    """
    parts = rel.split("/")
    if len(parts) != 3 or not parts[2].endswith(".parquet") or not parts[0].startswith("date="):
        return None
    return parts[0] + "/" + parts[1] if parts[1].startswith("hour=") else None


#: Log files read at once (each is a round trip or two on an object store).
_READ_THREADS = 16
_PARQUET = pads.ParquetFileFormat()


def _read_tables(fs: pafs.FileSystem, files: list[pafs.FileInfo]) -> list[pa.Table]:
    """The tables of the Parquet ``files`` that read, in order, read on a pool of threads (the
    listed size spares each file a HEAD); a file that cannot be read (being replaced, or not
    Parquet) is logged and skipped."""

    def read(info: pafs.FileInfo) -> pa.Table | None:
        try:
            return _PARQUET.make_fragment(info.path, filesystem=fs, file_size=info.size).to_table()
        except (pa.ArrowException, OSError) as exc:  # read again next time
            log.warning("log reader: cannot read %s: %s", info.path, exc)
            return None

    if len(files) < 2:
        tables = [read(info) for info in files]
    else:
        with ThreadPoolExecutor(max_workers=min(_READ_THREADS, len(files)), thread_name_prefix="log-read") as pool:
            tables = list(pool.map(read, files))
    return [table for table in tables if table is not None]


def recent_files(storage: Storage, folder: str, since: float | None = None) -> list[pafs.FileInfo]:
    """Files in the newest ``date=…/hour=…`` partitions of a log, modified at or after ``since``."""
    partitions = []
    for date in storage.list(folder)[-RECENT_PARTITIONS:]:
        partitions += [f"{folder}/{date}/{hour}" for hour in storage.list(f"{folder}/{date}")]
    infos = []
    for part in partitions[-RECENT_PARTITIONS:]:
        selector = pafs.FileSelector(storage.path(part), allow_not_found=True)
        try:
            infos += [i for i in storage.fs.get_file_info(selector)
                      if i.type == pafs.FileType.File and i.path.endswith(".parquet")]
        except (pa.ArrowException, OSError) as exc:
            raise StorageError(f"cannot list {storage.uri(part)}: {exc}") from exc
    if since is not None:
        infos = [i for i in infos if i.mtime is None or i.mtime.timestamp() >= since]
    return sorted(infos, key=lambda i: i.path)


def read_files(storage: Storage, infos: list[pafs.FileInfo]) -> pd.DataFrame:
    """The rows of log files listed by :func:`recent_files`; a file being replaced is skipped."""
    frames = [table.to_pandas() for table in _read_tables(storage.fs, infos)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


__all__ = ["MONITOR_ACTOR", "PREDICTIONS_DIR", "FEEDBACK_DIR", "META_COLUMNS", "REQUIRED_META", "FEEDBACK_COLUMNS",
           "SHADOW_COLUMNS", "CANARY_COLUMN", "with_shadow_columns", "partition_of", "record_keys", "parquet_bytes", "PartitionedWriter", "read_log", "read_partitioned",
           "recent_files", "read_files"]
