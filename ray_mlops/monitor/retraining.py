"""The retraining tracker: an alarm becomes at most one retraining job, followed to its outcome.

The job itself (ingest → search → register → gate → swap) is
:func:`ray_mlops.monitor.retrain.retrain`, launched as Ray work by the actor's launcher;
this part only keeps the book: which job is running, what earlier ones ended with. The
monitor checkpoints between :meth:`RetrainTracker.begin` and :meth:`RetrainTracker.launch`
(write-ahead), so a restart resumes the job and never starts a second one.

>>> class Recording:
...     def __init__(self): self.jobs = []
...     def launch(self, job): self.jobs.append(job["id"])
...     def poll(self, job): return {"id": job["id"], "status": "rejected"}
>>> tracker = RetrainTracker(Recording(), enabled=True, clock=lambda: 1000.0)
>>> job = tracker.begin(trigger_window=3, onset="2026-01-01T00:00:00+00:00", production="v1")
>>> tracker.launch() is None and tracker.book.active["launched"]
True
>>> tracker.follow()["status"], tracker.book.active, len(tracker.book.history)
('rejected', None, 1)
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from ray_mlops.monitor.tester import now_iso

log = logging.getLogger(__name__)

SHADOWED = "shadowing"  # a retraining's outcome when its candidate went into shadow (not promoted yet)
GATE_FIELDS = ("promoted", "reason", "metric", "candidate_score", "production_score", "require", "compared_with",
               "test")


class Launcher(Protocol):
    """Runs a retraining job somewhere (the actor: as Ray work; tests: recording)."""

    def launch(self, job: dict) -> None: ...

    def poll(self, job: dict) -> dict | None: ...


@dataclass
class RetrainBook:
    """The running job (or None) and the outcomes of earlier ones."""

    active: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


class RetrainTracker:
    """At most one retraining at a time (see the module docstring)."""

    def __init__(self, launcher: Launcher | None, *, enabled: bool, book: RetrainBook | None = None,
                 clock: Callable[[], float] = time.time, event: Callable[..., None] = lambda kind, **fields: None):
        self.launcher, self.enabled, self.book, self.clock = launcher, enabled, book or RetrainBook(), clock
        self.event = event

    def on_alarm(self, summary: dict, onset: str, production: str | None,
                 write_ahead: Callable[[], None]) -> dict[str, Any] | None:
        """Confirmed drift at window ``summary``: start a job unless one runs or retraining is off.

        ``write_ahead`` (the monitor's checkpoint) runs between recording the job and
        launching it. Returns the outcome entry when the launch itself failed.
        """
        refusal = self.refusal()
        if refusal is not None:
            running = {"retrain": self.book.active["id"]} if self.book.active else {}
            self.event("monitor_alarm", window=summary["index"], action=refusal, **running)
            return None
        job = self.begin(trigger_window=summary["index"], onset=onset, production=production)
        write_ahead()  # a restart resumes this job, never a second one
        self.event("monitor_alarm", window=summary["index"], action="retraining", retrain=job["id"],
                   onset=onset, p_value=summary["p_value"])
        return self.launch()

    def refusal(self) -> str | None:
        """Why an alarm would not start a retraining now (None: it would)."""
        if self.book.active is not None:
            return "ignored: retraining already running"
        if self.launcher is None or not self.enabled:
            return "none: retraining disabled"
        return None

    def begin(self, *, trigger_window: int, onset: str, production: str | None) -> dict[str, Any]:
        """Record a new job as active (not launched yet); checkpoint before :meth:`launch`."""
        job = {"id": f"r{int(self.clock())}-{uuid.uuid4().hex[:6]}", "trigger_window": trigger_window,
               "onset": onset, "production_version": production, "created": now_iso(self.clock()), "launched": False}
        self.book.active = job
        return job

    def launch(self) -> dict[str, Any] | None:
        """Launch the active job; the outcome entry when the launch itself failed."""
        job = self.book.active
        try:
            self.launcher.launch(job)
        except Exception as exc:  # the launch itself failed: record it, production untouched
            return self.finish({"id": job["id"], "status": "failed", "stage": "launch", "error": str(exc)[:500]})
        job["launched"] = True
        return None

    def follow(self) -> dict[str, Any] | None:
        """Launch a job a restart left unlaunched, or poll it; its outcome entry once it ended."""
        job = self.book.active
        if job is None or self.launcher is None:
            return None
        if not job.get("launched"):
            return self.launch()
        try:
            result = self.launcher.poll(job)
        except Exception as exc:
            log.warning("monitor: cannot poll retraining %s: %s", job["id"], exc)
            return None
        return None if result is None else self.finish(result)

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        """Close the active job with ``result``; returns its history entry."""
        job = self.book.active
        entry = {**{k: v for k, v in result.items() if k != "decision"},
                 "trigger_window": job["trigger_window"], "onset": job["onset"]}
        if "decision" in result:
            entry["gate"] = {k: result["decision"].get(k) for k in GATE_FIELDS}
        self.book.active = None
        self.book.history.append(entry)
        return entry


__all__ = ["RetrainTracker", "RetrainBook", "Launcher", "SHADOWED"]
