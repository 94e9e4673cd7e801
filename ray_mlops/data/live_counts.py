"""Per-source counts of an ingest while it runs: files and records read, accepted, quarantined.

The record step runs in Ray Data tasks anywhere in the cluster; each batch it finishes adds
its counts to one small actor (one short call per batch, no CPU reserved), and a thread on
the driver reads the totals every few seconds and reports the sources whose counts moved
to :mod:`ray_mlops.progress`. These are the record step's counts; the exact final ones
(after the entity step's checks) are reported when the ingest is done.

>>> tally = Tally()
>>> tally.add("events", files=2, accepted=7, quarantined=1)
>>> tally.line("events")
'ingest: events: read 8, accepted 7, quarantined 1 (2 files)'
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import ray

from ray_mlops.progress import report as progress

INTERVAL_S = 2.0
WAIT_S = 10.0


@dataclass
class SourceCounts:
    """What the record step has seen of one source so far."""

    files: int = 0
    accepted: int = 0
    quarantined: int = 0

    @property
    def read(self) -> int:
        return self.accepted + self.quarantined


@dataclass
class Tally:
    """Counts by source name (the state of the actor, and plain data for tests)."""

    sources: dict[str, SourceCounts] = field(default_factory=dict)

    def add(self, source: str, files: int, accepted: int, quarantined: int) -> None:
        counts = self.sources.setdefault(source, SourceCounts())
        counts.files += files
        counts.accepted += accepted
        counts.quarantined += quarantined

    def snapshot(self) -> "Tally":
        return Tally({name: SourceCounts(c.files, c.accepted, c.quarantined) for name, c in self.sources.items()})

    def line(self, source: str) -> str:
        c = self.sources[source]
        files = f" ({c.files} files)" if c.files else ""
        return f"ingest: {source}: read {c.read}, accepted {c.accepted}, quarantined {c.quarantined}{files}"


TallyActor = ray.remote(num_cpus=0, max_restarts=0)(Tally)


class Recorder:
    """The picklable side the record step holds: adds a batch's counts to the actor, never fails the batch.

    The call is waited for, so when the record step's execution is over the tally is complete.
    """

    def __init__(self, actor: ray.actor.ActorHandle | None):
        self.actor = actor

    def add(self, source: str, files: int, accepted: int, quarantined: int) -> None:
        if self.actor is None:
            return
        try:
            ray.get(self.actor.add.remote(source, files, accepted, quarantined), timeout=WAIT_S)
        except Exception:  # noqa: BLE001 - progress is best effort; the counts that matter are exact elsewhere
            self.actor = None


class LiveCounts:
    """While open: a tally actor and a driver thread reporting per-source counts every ``interval`` seconds."""

    def __init__(self, order: list[str], interval: float = INTERVAL_S, report: Callable[[str], None] | None = None):
        self.order, self.interval = order, interval
        self.report = report or (lambda line: progress("%s", line))
        self.actor = TallyActor.remote()
        self.recorder = Recorder(self.actor)
        self._stop = threading.Event()
        self._shown: dict[str, SourceCounts] = {}
        self._thread = threading.Thread(target=self._run, name="ingest-progress", daemon=True)

    def __enter__(self) -> "LiveCounts":
        self._thread.start()
        return self

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None:
            self.poll()
        ray.kill(self.actor)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        """Report each source whose counts moved since the last report."""
        try:
            tally: Tally = ray.get(self.actor.snapshot.remote(), timeout=WAIT_S)
        except Exception:  # noqa: BLE001 - a late or lost progress report is not an ingest failure
            return
        for name in [n for n in self.order if n in tally.sources]:
            if tally.sources[name] != self._shown.get(name):
                self._shown[name] = tally.sources[name]
                self.report(tally.line(name))


__all__ = ["LiveCounts", "Recorder", "SourceCounts", "Tally"]
