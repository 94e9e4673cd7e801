"""The monitor's state (what a checkpoint holds) and its status (what ``ray-mlops status`` shows).

:class:`MonitorState` is the parts' states together: the window cutter's
(:class:`~ray_mlops.monitor.window.CutterState`), the drift stream's, the retraining
book, the probation book, counters and the last verdict summaries. It is saved as
``monitor/state.json`` in one flat JSON layout (:meth:`MonitorState.to_json`), which
also reads checkpoints written before the parts existed.

:class:`MonitorStatus` is built in one place (:meth:`MonitorStatus.of`), from a live
monitor or from a checkpoint when the monitor is down, and rendered by the CLI (table and
``--json``), the demo and the HTML report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ray_mlops.monitor.probation import ROLLED_BACK, Probation, ProbationBook
from ray_mlops.monitor.retraining import RetrainBook, RetrainJob, RetrainOutcome
from ray_mlops.monitor.shadow import ShadowBook, ShadowTrial
from ray_mlops.monitor.tester import VerdictSummary
from ray_mlops.monitor.window import CutterState

CUTTER_FIELDS = tuple(f.name for f in fields(CutterState))
BOOKS = ("cutter", "retrain", "probation", "shadow", "verdicts")


@dataclass
class MonitorState:
    """Everything the monitor checkpoints besides the open window."""

    started: str | None = None
    stream: dict[str, Any] = field(default_factory=dict)  # DriftStream.to_state()
    windows: int = 0
    skipped_windows: int = 0
    bad_records: int = 0
    restarts: int = 0
    reference_version: str | None = None
    checkpoint_time: float | None = None
    verdicts: list[VerdictSummary] = field(default_factory=list)
    cutter: CutterState = field(default_factory=CutterState)
    retrain: RetrainBook = field(default_factory=RetrainBook)
    probation: ProbationBook = field(default_factory=ProbationBook)
    shadow: ShadowBook = field(default_factory=ShadowBook)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's flat layout (``state.json``)."""
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in BOOKS}
        return {**plain, **asdict(self.cutter), "verdicts": [v.to_dict() for v in self.verdicts],
                "retrain": self.retrain.to_dict(), "probation": self.probation.to_dict(), "shadow": self.shadow.to_dict()}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "MonitorState":
        """Read a checkpoint (one from before probation or shadows has none: they start fresh)."""
        own = {f.name for f in fields(cls)} - set(BOOKS)
        return cls(**{k: v for k, v in raw.items() if k in own},
                   cutter=CutterState(**{k: raw[k] for k in CUTTER_FIELDS if k in raw}),
                   verdicts=[VerdictSummary.from_dict(v) for v in raw.get("verdicts", [])],
                   retrain=RetrainBook.from_dict(raw.get("retrain") or {}),
                   probation=ProbationBook.from_dict(raw.get("probation") or {}),
                   shadow=ShadowBook.from_dict(raw.get("shadow") or {}))


@dataclass
class MonitorStatus:
    """The monitor at a glance (``ray-mlops status``; the actor's ``status()``)."""

    running: bool
    windows: int = 0
    skipped_windows: int = 0
    records: int = 0
    open_window_rows: int | None = None
    bad_record_batches: int = 0
    dropped_records: int = 0
    restarts: int = 0
    streak: int = 0
    cooldown_left: int = 0
    alarms: int = 0
    reference: dict[str, Any] | None = None
    last_verdicts: list[VerdictSummary] = field(default_factory=list)
    retrain_active: RetrainJob | None = None
    retrain_history: list[RetrainOutcome] = field(default_factory=list)
    window_size: int | None = None
    probation: Probation | None = None
    rollbacks: list[Probation] = field(default_factory=list)
    rollback_count: int = 0
    consecutive_rollbacks: int = 0
    shadow: ShadowTrial | None = None  # the candidate in shadow (its trial), if any
    shadow_history: list[ShadowTrial] = field(default_factory=list)
    step_errors: int | None = None
    alive: bool | None = None
    node_id: str | None = None
    error: str | None = None

    @classmethod
    def of(cls, state: MonitorState, *, running: bool, **live: Any) -> "MonitorStatus":
        """The status of ``state``; ``live`` adds what only a running monitor knows (open rows, reference, ...)."""
        book = state.probation
        stream = state.stream
        values = dict(running=running, windows=state.windows, skipped_windows=state.skipped_windows,
                   records=state.cutter.records, bad_record_batches=state.bad_records,
                   dropped_records=state.cutter.dropped_records, restarts=state.restarts,
                   streak=stream.get("streak", 0), cooldown_left=stream.get("cooldown_left", 0),
                   alarms=sum(1 for v in state.verdicts if v.alarm), last_verdicts=state.verdicts[-10:],
                   reference={"version": state.reference_version}, retrain_active=state.retrain.active,
                   retrain_history=list(state.retrain.history), probation=book.active, rollbacks=book.rollbacks(),
                   rollback_count=sum(p.status == ROLLED_BACK for p in book.history),
                   consecutive_rollbacks=book.consecutive_rollbacks, shadow=state.shadow.active,
                   shadow_history=state.shadow.history[-5:])
        return cls(**{**values, **live})

    @classmethod
    def down(cls, error: str | None = None) -> "MonitorStatus":
        """No monitor running and no checkpoint to read (or the actor did not answer)."""
        return cls(running=False, error=error)

    def to_json(self) -> dict[str, Any]:
        """A plain dict for ``--json`` (the records as their ``to_dict``)."""
        return asdict(self)


__all__ = ["MonitorState", "MonitorStatus"]
