"""Probation: a version the loop promoted is rolled back when it does worse in production.

When the ``production`` alias moves to a version a retraining promoted (its metadata
names the retraining and its parent is the version it replaced), that version is on
probation for the next ``monitor.probation_windows`` windows it serves. Each of those
windows with at least ``monitor.min_labels`` labels already gets the accuracy test against
the accuracy the version was promoted with (one-sided Fisher exact,
:class:`~ray_mlops.monitor.drift.PerformanceDriftDetector`). A window whose p-value is at
most ``alpha / probation_windows`` rolls production back to the version before it and
swaps Serve back to it; after the last probation window the version has passed.

**Calibration.** A probation runs at most K = ``probation_windows`` accuracy tests, each
at level alpha / K. By the union bound (Bonferroni, valid under any dependence: the K
tests share the version's reference counts, so they are positively correlated), a version
that is *not* worse is rolled back with probability at most ``monitor.alpha`` over its
whole probation, whatever K is and however many windows have labels. Reusing the drift
test's per-window level (alpha / 3) would allow up to K · alpha / 3 false rollbacks per
promotion. The one-sided Fisher test is itself conservative, so the realised rate is below
alpha (``tests/test_probation.py`` simulates it, and the power against a worse version).

:func:`roll_back` is the action the monitor actor injects: registry first, then Serve,
idempotent so a monitor restarted in the middle can run it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable, ClassVar

from ray_mlops.config import Config
from ray_mlops.errors import AliasMovedError, RayMlopsError
from ray_mlops.monitor._records import Record, dump_book, load_book
from ray_mlops.monitor.store import MonitorStore
from ray_mlops.monitor.tester import VerdictSummary
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

ACTIVE, ROLLING_BACK = "active", "rolling_back"
PASSED, ROLLED_BACK, FAILED, SUPERSEDED = "passed", "rolled_back", "rollback_failed", "superseded"
MAX_BACKOFF_DOUBLINGS = 4  # the cooldown after rollbacks in a row grows to at most 16x


@dataclass(frozen=True)
class ProbationTrigger(Record):
    """The window that decided a rollback, and its evidence."""

    window: int | None = None
    p_value: float | None = None
    level: float | None = None
    accuracy: float | None = None
    labeled: int | None = None
    reference_accuracy: float | None = None
    probation_window: int | None = None


@dataclass(frozen=True)
class Probation(Record):
    """One promoted version on trial (a checkpointable record; :meth:`observe` gives the next one).

    Example:
        >>> from ray_mlops.monitor.tester import VerdictSummary
        >>> p = Probation("v3", "v2", windows=2, level=0.005)
        >>> p = p.observe(VerdictSummary(7, served_versions=["v3"], detectors={"accuracy": 0.2}))
        >>> p.status
        'active'
        >>> p = p.observe(VerdictSummary(8, served_versions=["v3"], detectors={"accuracy": 1e-4},
        ...                              accuracy=0.6, labeled=100))
        >>> p.status, p.trigger.window, p.tested
        ('rolling_back', 8, 2)
    """

    nested: ClassVar[dict[str, type[Record]]] = {"trigger": ProbationTrigger}

    version: str
    previous: str
    windows: int
    level: float
    retrain: str | None = None
    reference_accuracy: float | None = None
    started: str | None = None
    seen: int = 0
    tested: int = 0
    status: str = ACTIVE
    trigger: ProbationTrigger | None = None
    outcome: dict[str, Any] | None = None  # what the rollback action returned
    ended: str | None = None
    production: str | None = None  # superseded: the version production moved to

    def observe(self, window: VerdictSummary) -> "Probation":
        """The probation after one more tested window (its summary)."""
        if self.status != ACTIVE or self.version not in window.served_versions:
            return self  # a window of older records only does not use up probation
        seen, tested, p_value = self.seen + 1, self.tested, window.detectors.get("accuracy")
        if p_value is not None:
            tested += 1
            if p_value <= self.level:
                trigger = ProbationTrigger(window.index, p_value, self.level, window.accuracy, window.labeled,
                                           self.reference_accuracy, seen)
                return replace(self, seen=seen, tested=tested, status=ROLLING_BACK, trigger=trigger)
        return replace(self, seen=seen, tested=tested, status=PASSED if seen >= self.windows else ACTIVE)

    def plan(self) -> dict[str, Any]:
        """What the rollback action needs: versions and the evidence for the event."""
        return {"version": self.version, "previous": self.previous, "retrain": self.retrain,
                "evidence": {} if self.trigger is None else self.trigger.to_dict()}


def is_loop_promotion(meta: dict, previous: str | None) -> bool:
    """Did a retraining promote this version over ``previous`` (not an operator, not a rollback)?"""
    return previous is not None and bool(meta.get("extra", {}).get("retrain")) and meta.get("parent") == previous


# -- the tracker: probation across promotions -------------------------------------------
@dataclass
class ProbationBook:
    """The probation running (or None), ended ones, rollbacks in a row."""

    active: Probation | None = None
    history: list[Probation] = field(default_factory=list)
    consecutive_rollbacks: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's layout of the book."""
        return {**dump_book(self.active, self.history), "consecutive_rollbacks": self.consecutive_rollbacks}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ProbationBook":
        """Read the book from a checkpoint (one from before probation has none: it starts fresh)."""
        return cls(*load_book(Probation, Probation, raw), raw.get("consecutive_rollbacks", 0))

    def rollbacks(self) -> list[Probation]:
        """The last ended probations that rolled back (or failed to)."""
        return [p for p in self.history if p.status in (ROLLED_BACK, FAILED)][-5:]


class ProbationTracker:
    """Starts a probation when the loop promotes, counts windows against it, runs the rollback.

    ``rollback(plan) -> outcome`` is the injected action (:func:`roll_back` in the actor;
    None: no probation); ``event(kind, **fields)`` records what happened. The monitor
    checkpoints before :meth:`execute` (write-ahead), so a restart completes a rollback
    decided before it (:meth:`pending`) and never runs a second one.
    """

    def __init__(self, rollback: Callable[[dict], dict] | None, *, windows: int, alpha: float, cooldown: int,
                 history: int, event: Callable[..., None], metadata: Callable[[str], dict],
                 book: ProbationBook | None = None, now: Callable[[], str] = lambda: "",
                 metrics: Callable[[str, dict], None] = lambda kind, payload: None):
        self.rollback, self.windows, self.alpha, self.cooldown, self.keep = rollback, windows, alpha, cooldown, history
        self.event, self.metadata, self.book, self.now = event, metadata, book or ProbationBook(), now
        self.metrics = metrics

    def wants(self, production: str, previous: str | None) -> bool:
        """Could a move of production to ``production`` start a probation (before reading its metadata)?"""
        if self.rollback is None or not self.windows or previous in (None, production):
            return False
        return not any(p.version == production for p in self.book.history)  # once per promotion

    def on_production_moved(self, production: str, previous: str | None, reference_accuracy: float | None) -> None:
        """Close a probation production moved away from; start one if the loop promoted ``production``."""
        active = self.book.active
        if active is not None and active.status == ACTIVE and active.version != production:
            self._close(active, SUPERSEDED, production=production)
        meta = self._metadata(production) if self.wants(production, previous) else None
        if meta is None or not is_loop_promotion(meta, previous):
            return
        probation = Probation(production, previous, windows=self.windows, level=self.alpha / self.windows,
                              retrain=meta["extra"]["retrain"], reference_accuracy=reference_accuracy,
                              started=self.now())
        self.book.active = probation
        self.event("monitor_probation", action="started", version=production, previous=previous,
                   windows=self.windows, level=probation.level, reference_accuracy=reference_accuracy)

    def observe(self, summary: VerdictSummary, reference_version: str | None) -> Probation | None:
        """Count a tested window; the probation to roll back when this window decided it."""
        active = self.book.active
        if active is None or active.status != ACTIVE or reference_version != active.version:
            return None
        probation = active.observe(summary)
        if probation.status == PASSED:
            self.book.consecutive_rollbacks = 0
            self._close(probation, PASSED)
            return None
        self.book.active = probation
        if probation.status != ROLLING_BACK:
            return None
        self.event("monitor_probation", action="rolling back", version=probation.version,
                   previous=probation.previous, **probation.trigger.to_dict())
        return probation

    def _metadata(self, version: str) -> dict | None:
        try:
            return self.metadata(version)
        except RayMlopsError as exc:
            log.warning("monitor: cannot read the metadata of %s: %s", version, exc)
            return None

    def pending(self) -> Probation | None:
        """A rollback decided before a restart, not completed yet."""
        active = self.book.active
        return active if active is not None and active.status == ROLLING_BACK and self.rollback is not None else None

    def execute(self, probation: Probation) -> str:
        """Run the rollback action once; returns the probation's final status."""
        try:
            outcome = dict(self.rollback(probation.plan()))
        except Exception as exc:  # the action itself broke: recorded, not retried (once per promotion)
            outcome = {"status": "failed", "stage": "action", "error": f"{type(exc).__name__}: {exc}"[:500]}
        status = {ROLLED_BACK: ROLLED_BACK, "skipped": SUPERSEDED}.get(outcome.get("status"), FAILED)
        self._close(replace(probation, outcome=outcome), status)
        if status == ROLLED_BACK:
            self.book.consecutive_rollbacks += 1
        self.metrics("rollback", {"outcome": status, "version": probation.version, "target": probation.previous,
                                  **({} if probation.trigger is None else probation.trigger.to_dict()),
                                  "error": outcome.get("error")})
        return status

    def hold_windows(self) -> int:
        """Windows with no alarm after the last rollback: ``cooldown``, doubled per rollback in a row."""
        return self.cooldown * 2 ** min(self.book.consecutive_rollbacks - 1, MAX_BACKOFF_DOUBLINGS)

    def _close(self, probation: Probation, status: str, production: str | None = None) -> None:
        ended = replace(probation, status=status, ended=self.now(), production=production)
        self.book.active = None
        self.book.history = (self.book.history + [ended])[-self.keep:]
        if status not in (ROLLED_BACK, FAILED):
            moved = {} if production is None else {"production": production}
            self.event("monitor_probation", action=status, version=probation.version, previous=probation.previous,
                       windows_seen=probation.seen, windows_tested=probation.tested, **moved)


# -- the real action --------------------------------------------------------------------
def roll_back(config: Config, storage: Storage, plan: dict, *, swap: Callable[[Config, str], Any] | None = None) -> dict:
    """Point production back at ``plan["previous"]`` and swap Serve to it.

    Idempotent: when production already names the previous version (a monitor restarted
    between the two steps) only the swap is redone. When the swap fails, production is
    pointed back at the version still being served, so the registry never names a version
    Serve does not run. Returns ``{"status": "rolled_back" | "failed" | "skipped", ...}``.
    """
    registry = Registry(storage, config.model_name)
    version, target = plan["version"], plan["previous"]
    production = registry.get_alias("production")
    if production == version:
        history = registry.alias_history("production")
        if len(history) < 2 or history[-2] != target:
            return _failed(registry, plan, "registry", f"production history {history[-3:]} does not go back to {target}")
        try:
            registry.rollback(reason=f"probation: {version} worse in production than promoted", expected=version,
                              details={"automatic": True, "retrain": plan.get("retrain"), **plan["evidence"]})
        except AliasMovedError as exc:  # an operator changed production since it was read
            return {"status": "skipped", "version": version, "target": target, "reason": str(exc)}
    elif production != target:
        return {"status": "skipped", "version": version, "target": target,
                "reason": f"production moved to {production} meanwhile; nothing rolled back"}
    try:
        served = None if swap is None else swap(config, target)
    except Exception as exc:  # Serve still runs `version`: the registry says so again
        error = f"{type(exc).__name__}: {exc}"[:500]
        registry.promote(version, reason=f"rollback to {target} not served ({error}); restored")
        return _failed(registry, plan, "swap", error)
    return {"status": ROLLED_BACK, "version": version, "target": target,
            "served": None if served is None else str(served)}


def _failed(registry: Registry, plan: dict, stage: str, error: str) -> dict:
    outcome = {"status": "failed", "version": plan["version"], "target": plan["previous"], "stage": stage,
               "error": error}
    MonitorStore(registry.storage).record_event("rollback_failed", **outcome, **plan["evidence"])
    return outcome


__all__ = ["Probation", "ProbationTrigger", "ProbationBook", "ProbationTracker", "is_loop_promotion", "roll_back"]
