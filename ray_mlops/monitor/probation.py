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
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ray_mlops.config import Config
from ray_mlops.errors import AliasMovedError, RayMlopsError
from ray_mlops.monitor.store import MonitorStore
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

ACTIVE, ROLLING_BACK = "active", "rolling_back"
PASSED, ROLLED_BACK, FAILED, SUPERSEDED = "passed", "rolled_back", "rollback_failed", "superseded"
MAX_BACKOFF_DOUBLINGS = 4  # the cooldown after rollbacks in a row grows to at most 16x


@dataclass
class Probation:
    """One promoted version on trial (a plain, checkpointable record).

    Example:
        >>> p = Probation("v3", "v2", windows=2, level=0.005)
        >>> p.observe({"index": 7, "served_versions": ["v3"], "detectors": {"accuracy": 0.2}})
        'active'
        >>> p.observe({"index": 8, "served_versions": ["v3"], "detectors": {"accuracy": 1e-4},
        ...            "accuracy": 0.6, "labeled": 100})
        'rolling_back'
        >>> p.trigger["window"], p.tested
        (8, 2)
    """

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
    trigger: dict[str, Any] | None = None
    outcome: dict[str, Any] | None = field(default=None)

    def observe(self, window: dict) -> str:
        """Count one tested window (its summary); returns the status after it."""
        if self.status != ACTIVE or self.version not in window.get("served_versions", []):
            return self.status  # a window of older records only does not use up probation
        self.seen += 1
        p_value = (window.get("detectors") or {}).get("accuracy")
        if p_value is not None:
            self.tested += 1
            if p_value <= self.level:
                self.status = ROLLING_BACK
                self.trigger = {"window": window.get("index"), "p_value": p_value, "level": self.level,
                                "accuracy": window.get("accuracy"), "labeled": window.get("labeled"),
                                "reference_accuracy": self.reference_accuracy, "probation_window": self.seen}
                return self.status
        if self.seen >= self.windows:
            self.status = PASSED
        return self.status

    def plan(self) -> dict[str, Any]:
        """What the rollback action needs: versions and the evidence for the event."""
        return {"version": self.version, "previous": self.previous, "retrain": self.retrain,
                "evidence": dict(self.trigger or {})}

    def to_state(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Probation":
        return cls(**state)


def is_loop_promotion(meta: dict, previous: str | None) -> bool:
    """Did a retraining promote this version over ``previous`` (not an operator, not a rollback)?"""
    return previous is not None and bool(meta.get("extra", {}).get("retrain")) and meta.get("parent") == previous


# -- the tracker: probation across promotions -------------------------------------------
@dataclass
class ProbationBook:
    """The probation running (a :class:`Probation` state, or None), ended ones, rollbacks in a row."""

    active: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    consecutive_rollbacks: int = 0


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
        return not any(p["version"] == production for p in self.book.history)  # once per promotion

    def on_production_moved(self, production: str, previous: str | None, reference_accuracy: float | None) -> None:
        """Close a probation production moved away from; start one if the loop promoted ``production``."""
        active = self.book.active
        if active is not None and active["status"] == ACTIVE and active["version"] != production:
            self._close(Probation.from_state(active), SUPERSEDED, production=production)
        meta = self._metadata(production) if self.wants(production, previous) else None
        if meta is None or not is_loop_promotion(meta, previous):
            return
        probation = Probation(production, previous, windows=self.windows, level=self.alpha / self.windows,
                              retrain=meta["extra"]["retrain"], reference_accuracy=reference_accuracy,
                              started=self.now())
        self.book.active = probation.to_state()
        self.event("monitor_probation", action="started", version=production, previous=previous,
                   windows=self.windows, level=probation.level, reference_accuracy=reference_accuracy)

    def observe(self, summary: dict, reference_version: str | None) -> Probation | None:
        """Count a tested window; the probation to roll back when this window decided it."""
        active = self.book.active
        if active is None or active["status"] != ACTIVE or reference_version != active["version"]:
            return None
        probation = Probation.from_state(active)
        status = probation.observe(summary)
        if status == PASSED:
            self.book.consecutive_rollbacks = 0
            self._close(probation, PASSED)
            return None
        self.book.active = probation.to_state()
        if status != ROLLING_BACK:
            return None
        self.event("monitor_probation", action="rolling back", version=probation.version,
                   previous=probation.previous, **probation.trigger)
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
        if active is not None and active["status"] == ROLLING_BACK and self.rollback is not None:
            return Probation.from_state(active)
        return None

    def execute(self, probation: Probation) -> str:
        """Run the rollback action once; returns the probation's final status."""
        try:
            outcome = dict(self.rollback(probation.plan()))
        except Exception as exc:  # the action itself broke: recorded, not retried (once per promotion)
            outcome = {"status": "failed", "stage": "action", "error": f"{type(exc).__name__}: {exc}"[:500]}
        probation.outcome = outcome
        status = {ROLLED_BACK: ROLLED_BACK, "skipped": SUPERSEDED}.get(outcome.get("status"), FAILED)
        self._close(probation, status)
        if status == ROLLED_BACK:
            self.book.consecutive_rollbacks += 1
        self.metrics("rollback", {"outcome": status, "version": probation.version, "target": probation.previous,
                                  **(probation.trigger or {}), "error": outcome.get("error")})
        return status

    def hold_windows(self) -> int:
        """Windows with no alarm after the last rollback: ``cooldown``, doubled per rollback in a row."""
        return self.cooldown * 2 ** min(self.book.consecutive_rollbacks - 1, MAX_BACKOFF_DOUBLINGS)

    def _close(self, probation: Probation, status: str, **extra: Any) -> None:
        probation.status = status
        self.book.active = None
        self.book.history = (self.book.history + [{**probation.to_state(), "ended": self.now(), **extra}])[-self.keep:]
        if status not in (ROLLED_BACK, FAILED):
            self.event("monitor_probation", action=status, version=probation.version, previous=probation.previous,
                       windows_seen=probation.seen, windows_tested=probation.tested, **extra)

    def rollbacks(self) -> list[dict[str, Any]]:
        """The last ended probations that rolled back (or failed to)."""
        return [p for p in self.book.history if p["status"] in (ROLLED_BACK, FAILED)][-5:]


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


__all__ = ["Probation", "ProbationBook", "ProbationTracker", "is_loop_promotion", "roll_back"]
