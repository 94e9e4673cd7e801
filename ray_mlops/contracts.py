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
import threading
from typing import Any

import pandas as pd
import pyarrow as pa
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
    """
    import pyarrow.dataset as pads

    if not storage.exists(folder):
        return pd.DataFrame()
    partitioning = pads.partitioning(pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive")
    dataset = pads.dataset(storage.path(folder), filesystem=storage.fs, format="parquet",
                           partitioning=partitioning, exclude_invalid_files=True)
    dataset = _unified(dataset, partitioning, storage.path(folder))
    table = dataset.to_table(filter=_from_hour(since)) if since is not None else dataset.to_table()
    frame = table.to_pandas()
    return frame.drop(columns=[c for c in ("date", "hour") if c in frame.columns])


def _unified(dataset: Any, partitioning: Any, base: str) -> Any:
    """``dataset`` over the union of its files' columns (a file without the shadow columns, or
    with all-null ones, reads beside one that has them), when the files' schemas differ."""
    import pyarrow.dataset as pads

    fragments = list(dataset.get_fragments())
    schemas = {fragment.physical_schema for fragment in fragments}
    if len(schemas) < 2:
        return dataset
    schema = pa.unify_schemas([*schemas, dataset.schema], promote_options="permissive")
    return pads.dataset([f.path for f in fragments], schema=schema, filesystem=dataset.filesystem, format="parquet",
                        partitioning=partitioning, partition_base_dir=base)


def _from_hour(since: str) -> Any:
    """A dataset filter keeping the partitions of ``since``'s UTC hour and later."""
    import pyarrow.dataset as pads

    stamp = pd.Timestamp(since)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    date, hour = f"{stamp:%Y-%m-%d}", f"{stamp:%H}"
    return (pads.field("date") > date) | ((pads.field("date") == date) & (pads.field("hour") >= hour))


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
    frames = []
    for info in infos:
        try:
            with storage.fs.open_input_file(info.path) as handle:
                frames.append(pq.read_table(handle).to_pandas())
        except (pa.ArrowException, OSError) as exc:  # read again next time
            log.warning("log reader: cannot read %s: %s", info.path, exc)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


__all__ = ["MONITOR_ACTOR", "PREDICTIONS_DIR", "FEEDBACK_DIR", "META_COLUMNS", "REQUIRED_META", "FEEDBACK_COLUMNS",
           "SHADOW_COLUMNS", "CANARY_COLUMN", "with_shadow_columns", "partition_of", "record_keys", "parquet_bytes", "PartitionedWriter", "read_log", "read_partitioned",
           "recent_files", "read_files"]
