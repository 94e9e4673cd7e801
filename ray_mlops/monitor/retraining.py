"""The retraining tracker: an alarm becomes at most one retraining job, followed to its outcome.

The job itself (ingest → search → register → gate → swap) is
:func:`ray_mlops.monitor.retrain.retrain`, launched as Ray work by the actor's launcher;
this part only keeps the book: which job is running, what earlier ones ended with. The
monitor checkpoints between :meth:`RetrainTracker.begin` and :meth:`RetrainTracker.launch`
(write-ahead), so a restart resumes the job and never starts a second one.

>>> class Recording:
...     def __init__(self): self.jobs = []
...     def launch(self, job): self.jobs.append(job.id)
...     def poll(self, job): return {"id": job.id, "status": "rejected"}
>>> tracker = RetrainTracker(Recording(), enabled=True, clock=lambda: 1000.0)
>>> job = tracker.begin(trigger_window=3, onset="2026-01-01T00:00:00+00:00", production="v1")
>>> tracker.launch() is None and tracker.book.active.launched
True
>>> tracker.follow().status, tracker.book.active, len(tracker.book.history)
('rejected', None, 1)
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar, Protocol

from ray_mlops.monitor._records import Record, dump_book, load_book
from ray_mlops.monitor.tester import VerdictSummary, now_iso

log = logging.getLogger(__name__)

SHADOWED = "shadowing"  # a retraining's outcome when its candidate went into shadow (not promoted yet)


@dataclass(frozen=True)
class RetrainJob(Record):
    """A retraining the monitor started (recorded, then launched)."""

    id: str
    trigger_window: int
    onset: str | None = None
    production_version: str | None = None
    created: str | None = None
    launched: bool = False


@dataclass(frozen=True)
class GateSummary(Record):
    """What the retraining's offline gate decided (a part of ``GateDecision.to_dict()``)."""

    promoted: bool | None = None
    reason: str | None = None
    metric: str | None = None
    candidate_score: float | None = None
    production_score: float | None = None
    require: str | None = None
    compared_with: str | None = None
    test: dict[str, Any] | None = None  # PairedTest.to_json()


@dataclass(frozen=True)
class RetrainOutcome(Record):
    """How a retraining ended (``status``: promoted, rejected, shadowing or failed at ``stage``)."""

    nested: ClassVar[dict[str, type[Record]]] = {"gate": GateSummary}

    id: str
    status: str
    trigger_window: int | None = None
    onset: str | None = None
    version: str | None = None
    stage: str | None = None  # where it failed
    error: str | None = None
    gate: GateSummary | None = None
    served: str | None = None
    shadow: str | None = None  # the version deployed as the shadow
    shadow_started: str | None = None
    production_before: str | None = None
    production_after: str | None = None
    started: float | None = None
    finished: float | None = None
    seconds: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)  # stage name -> its seconds
    family: str | None = None
    holdout: str | None = None
    holdout_rows: int | None = None
    table_rows: int | None = None
    log_rows_added: int | None = None
    train_rows: int | None = None
    fingerprint: str | None = None

    @classmethod
    def of(cls, job: RetrainJob, result: dict[str, Any]) -> "RetrainOutcome":
        """The outcome of ``job`` from the job's own result (``retrain.retrain``'s dict)."""
        decision = result.get("decision")
        return cls.from_dict({**result, "trigger_window": job.trigger_window, "onset": job.onset,
                              "gate": None if decision is None else GateSummary.from_dict(decision)})


class Launcher(Protocol):
    """Runs a retraining job somewhere (the actor: as Ray work; tests: recording)."""

    def launch(self, job: RetrainJob) -> None: ...

    def poll(self, job: RetrainJob) -> dict | None: ...


@dataclass
class RetrainBook:
    """The running job (or None) and the outcomes of earlier ones."""

    active: RetrainJob | None = None
    history: list[RetrainOutcome] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's layout of the book."""
        return dump_book(self.active, self.history)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RetrainBook":
        """Read the book from a checkpoint."""
        return cls(*load_book(RetrainJob, RetrainOutcome, raw))


class RetrainTracker:
    """At most one retraining at a time (see the module docstring)."""

    def __init__(self, launcher: Launcher | None, *, enabled: bool, book: RetrainBook | None = None,
                 clock: Callable[[], float] = time.time, event: Callable[..., None] = lambda kind, **fields: None):
        self.launcher, self.enabled, self.book, self.clock = launcher, enabled, book or RetrainBook(), clock
        self.event = event

    def on_alarm(self, summary: VerdictSummary, onset: str, production: str | None,
                 write_ahead: Callable[[], None]) -> RetrainOutcome | None:
        """Confirmed drift at window ``summary``: start a job unless one runs or retraining is off.

        ``write_ahead`` (the monitor's checkpoint) runs between recording the job and
        launching it. Returns the outcome entry when the launch itself failed.
        """
        refusal = self.refusal()
        if refusal is not None:
            running = {"retrain": self.book.active.id} if self.book.active else {}
            self.event("monitor_alarm", window=summary.index, action=refusal, **running)
            return None
        job = self.begin(trigger_window=summary.index, onset=onset, production=production)
        write_ahead()  # a restart resumes this job, never a second one
        self.event("monitor_alarm", window=summary.index, action="retraining", retrain=job.id,
                   onset=onset, p_value=summary.p_value)
        return self.launch()

    def refusal(self) -> str | None:
        """Why an alarm would not start a retraining now (None: it would)."""
        if self.book.active is not None:
            return "ignored: retraining already running"
        if self.launcher is None or not self.enabled:
            return "none: retraining disabled"
        return None

    def begin(self, *, trigger_window: int, onset: str, production: str | None) -> RetrainJob:
        """Record a new job as active (not launched yet); checkpoint before :meth:`launch`."""
        job = RetrainJob(f"r{int(self.clock())}-{uuid.uuid4().hex[:6]}", trigger_window, onset=onset,
                         production_version=production, created=now_iso(self.clock()))
        self.book.active = job
        return job

    def launch(self) -> RetrainOutcome | None:
        """Launch the active job; the outcome entry when the launch itself failed."""
        job = self.book.active
        try:
            self.launcher.launch(job)
        except Exception as exc:  # the launch itself failed: record it, production untouched
            return self.finish({"id": job.id, "status": "failed", "stage": "launch", "error": str(exc)[:500]})
        self.book.active = replace(job, launched=True)
        return None

    def follow(self) -> RetrainOutcome | None:
        """Launch a job a restart left unlaunched, or poll it; its outcome entry once it ended."""
        job = self.book.active
        if job is None or self.launcher is None:
            return None
        if not job.launched:
            return self.launch()
        try:
            result = self.launcher.poll(job)
        except Exception as exc:
            log.warning("monitor: cannot poll retraining %s: %s", job.id, exc)
            return None
        return None if result is None else self.finish(result)

    def finish(self, result: dict[str, Any]) -> RetrainOutcome:
        """Close the active job with ``result`` (the job's own dict); returns its history entry."""
        entry = RetrainOutcome.of(self.book.active, result)
        self.book.active = None
        self.book.history.append(entry)
        return entry


__all__ = ["RetrainTracker", "RetrainBook", "RetrainJob", "RetrainOutcome", "GateSummary", "Launcher", "SHADOWED"]
