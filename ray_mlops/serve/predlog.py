"""The prediction log and the feedback log: durable, partitioned by time, never blocking.

Every prediction a replica makes becomes one row: the featurized inputs (the feature
table's columns) plus ``request_id``, ``row`` (the instance's index in its request),
``entity`` (the entity key the client sent, or null), ``model_version``, ``prediction``,
``probabilities`` (per class; null for regression) and ``time`` (UTC). Rows are
buffered in the replica as the chunks the batch path hands over (bounded: overflow is
dropped and counted); a background task turns them into one frame and flushes it, in a
thread, off the request path:

- fire-and-forget to the drift monitor actor (``actor.receive.remote(frame)``) when
  one is registered under its name; its absence is normal;
- durably to storage as Parquet, one file per flush and hour::

      <storage>/predictions/date=YYYY-MM-DD/hour=HH/<writer>-<seq>.parquet

Feedback (labels arriving later) is written before ``/feedback`` answers, to
``<storage>/feedback/date=…/hour=…/<writer>-<seq>.parquet`` with ``request_id``, ``row``,
``label`` and ``time``, so labels join predictions on ``(request_id, row)``. Requests that
arrive while a write is under way are committed together in the next file
(:class:`FeedbackLog`): one file per write rather than per request, and a label is
acknowledged only once it is stored.

The layout, the writer and the readers are defined once in :mod:`ray_mlops.contracts`
(shared with the monitor) and re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Callable, Protocol, Union

import pandas as pd
import pyarrow as pa

from ray_mlops.contracts import (
    FEEDBACK_DIR,
    META_COLUMNS,
    MONITOR_ACTOR,
    PREDICTIONS_DIR,
    SHADOW_COLUMNS,
    PartitionedWriter,
    partition_of,
    read_log,
)
from ray_mlops.errors import StorageError

log = logging.getLogger(__name__)


class Rows(Protocol):
    """Log rows kept as the batch path made them: ``type(rows).frame_of(chunks)`` builds the frame of
    several (in the flush thread, once per flush rather than once per batch)."""

    def __len__(self) -> int: ...

    @staticmethod
    def frame_of(chunks: list) -> pd.DataFrame: ...


Chunk = Union[pd.DataFrame, Rows]


def frame_of(chunks: list[Chunk]) -> pd.DataFrame:
    """One frame of buffered chunks: frames as they are, each run of :class:`Rows` of one type built at once."""
    frames: list[pd.DataFrame] = []
    start = 0
    for end in range(1, len(chunks) + 1):
        if end == len(chunks) or type(chunks[end]) is not type(chunks[start]):
            run = chunks[start:end]
            frames += run if isinstance(run[0], pd.DataFrame) else [type(run[0]).frame_of(run)]
            start = end
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


class MonitorLink:
    """A cheap, cached lookup of the monitor actor; sends are fire-and-forget."""

    def __init__(self, namespace: str, name: str = MONITOR_ACTOR, ttl_s: float = 10.0):
        self.namespace, self.name, self.ttl_s = namespace, name, ttl_s
        self._actor: Any = None
        self._checked = float("-inf")

    def _lookup(self) -> Any:
        if time.monotonic() - self._checked < self.ttl_s:
            return self._actor
        import ray

        try:
            self._actor = ray.get_actor(self.name, namespace=self.namespace)
        except ValueError:  # not registered: no monitor is running
            self._actor = None
        self._checked = time.monotonic()
        return self._actor

    def send(self, frame: pd.DataFrame) -> bool:
        """Hand ``frame`` to the monitor without waiting; False when there is none."""
        actor = self._lookup()
        if actor is None:
            return False
        try:
            actor.receive.remote(frame)
            return True
        except Exception as exc:  # a dead or restarting actor: look it up again next time
            log.warning("prediction log: monitor send failed: %s", exc)
            self._checked = float("-inf")
            return False


class PredictionLog:
    """A bounded in-replica buffer of prediction rows, flushed in the background.

    ``append`` never blocks and never raises: rows that do not fit are dropped and
    counted. A chunk is a frame or :class:`Rows`, whose frame is built when it flushes. ``run()`` is the flush loop (start it as a task); ``close()`` flushes what
    is left. ``on_event(kind, n)`` is told about ``"flushed"`` / ``"dropped"`` rows (for
    metrics).
    """

    def __init__(self, writer: PartitionedWriter | None, monitor: MonitorLink | None, *,
                 capacity: int, flush_rows: int, interval_s: float,
                 on_event: Callable[[str, int], None] = lambda kind, n: None):
        self.writer, self.monitor = writer, monitor
        self.capacity, self.flush_rows, self.interval_s = capacity, flush_rows, interval_s
        self.on_event = on_event
        self._chunks: deque[Chunk] = deque()
        self.buffered = 0
        self.counts = {"flushed": 0, "dropped": 0, "sent_to_monitor": 0, "write_errors": 0}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._closed = False

    def _count(self, kind: str, n: int) -> None:
        self.counts[kind] += n
        self.on_event(kind, n)

    def append(self, chunk: Chunk) -> bool:
        if self._closed or self.buffered + len(chunk) > self.capacity:
            self._count("dropped", len(chunk))
            return False
        self._chunks.append(chunk)
        self.buffered += len(chunk)
        if self.buffered >= self.flush_rows:
            self._wake.set()
        return True

    def stats(self) -> dict[str, int]:
        return {"buffered": self.buffered, **self.counts}

    def _take(self) -> list[Chunk]:
        chunks = list(self._chunks)
        self._chunks.clear()
        self.buffered = 0
        return chunks

    def _deliver(self, frame: pd.DataFrame) -> None:
        """Blocking part of a flush (runs in a thread): monitor send, then the durable write."""
        if self.monitor is not None and self.monitor.send(frame):
            self.counts["sent_to_monitor"] += len(frame)
        if self.writer is not None:
            self.writer.write(frame)

    async def flush(self) -> int:
        """Write out everything buffered now; returns the rows flushed."""
        async with self._flushing:
            chunks = self._take()
            if not chunks:
                return 0
            try:
                frame = await asyncio.to_thread(frame_of, chunks)
            except Exception as exc:  # rows that cannot be built: dropped and counted, the flush loop goes on
                log.error("prediction log: cannot build %d rows: %s: %s", sum(map(len, chunks)), type(exc).__name__, exc)
                self._count("dropped", sum(map(len, chunks)))
                return 0
            try:
                await asyncio.to_thread(self._deliver, frame)
            except (StorageError, OSError, pa.ArrowException) as exc:
                log.error("prediction log: write failed, will retry: %s", exc)
                self.counts["write_errors"] += 1
                self._requeue(frame)
                return 0
            self._count("flushed", len(frame))
            return len(frame)

    def _requeue(self, frame: pd.DataFrame) -> None:
        room = self.capacity - self.buffered
        if room < len(frame):
            self._count("dropped", len(frame) - max(room, 0))
            frame = frame.iloc[:max(room, 0)]
        if len(frame):
            self._chunks.appendleft(frame)
            self.buffered += len(frame)

    async def run(self) -> None:
        """Flush every ``interval_s`` or as soon as ``flush_rows`` rows are buffered."""
        while not self._closed:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def close(self) -> int:
        """Stop accepting rows and flush the rest."""
        self._closed = True
        self._wake.set()
        return await self.flush()


class FeedbackLog:
    """Group commit of labels: ``await write(frame)`` returns once ``frame`` is stored.

    While one write is in flight, the frames that arrive wait and go together in the next
    file, so a replica makes one storage write per round trip, not one per request; a
    failed write raises in every request it carried (nothing is acknowledged unstored).
    """

    def __init__(self, writer: PartitionedWriter):
        self.writer = writer
        self._waiting: list[tuple[pd.DataFrame, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    async def write(self, frame: pd.DataFrame) -> None:
        stored = asyncio.get_running_loop().create_future()
        self._waiting.append((frame, stored))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        await stored

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            error: Exception | None = None
            try:
                await asyncio.to_thread(self.writer.write, pd.concat([f for f, _ in batch], ignore_index=True))
            except Exception as exc:  # noqa: BLE001 - handed to each waiting request, which translates it
                error = exc
            for _, stored in batch:
                if stored.done():  # its request was cancelled
                    continue
                if error is None:
                    stored.set_result(None)
                else:
                    stored.set_exception(error)


__all__ = [
    "PredictionLog",
    "FeedbackLog",
    "Rows",
    "frame_of",
    "PartitionedWriter",
    "MonitorLink",
    "read_log",
    "partition_of",
    "PREDICTIONS_DIR",
    "FEEDBACK_DIR",
    "MONITOR_ACTOR",
    "META_COLUMNS",
    "SHADOW_COLUMNS",
]
