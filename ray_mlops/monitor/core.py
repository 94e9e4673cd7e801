"""The monitor's logic, without Ray: small parts with typed state, composed by :class:`Monitor`.

One step of the monitor, top to bottom (docs/ARCHITECTURE.md, "Data flow of one retraining"):

1. :class:`~ray_mlops.monitor.window.WindowCutter` — received prediction records are
   de-duplicated by key and cut into windows;
2. :class:`~ray_mlops.monitor.tester.WindowTester` — each window is tested against the
   production version's reference (inputs, outputs, accuracy or error);
3. :class:`~ray_mlops.monitor.drift.DriftStream` — patience and cooldown turn window
   verdicts into alarms;
4. :class:`~ray_mlops.monitor.retraining.RetrainTracker` — an alarm becomes one
   retraining job, launched by the injected ``launcher`` and followed to its outcome;
5. :class:`~ray_mlops.monitor.shadow.ShadowTracker` — a candidate a retraining deployed as
   a shadow is promoted or discarded by the injected ``shadow_action`` on the online paired
   test of live labeled rows;
6. :class:`~ray_mlops.monitor.probation.ProbationTracker` — a version a retraining
   promoted is on probation and rolled back by the injected ``rollback`` when worse.

:meth:`Monitor.receive` is the cheap path (validate the columns, queue); :meth:`Monitor.step`
(run by the actor's background thread) does the rest. Collaborators are injected: a
:class:`~ray_mlops.monitor.store.MonitorStore` (checkpoints, verdicts, events, the logs),
``launcher`` (``launch(job)``, ``poll(job)``), ``rollback(plan) -> outcome``,
``shadow_action(plan) -> outcome`` and an ``observe(kind, payload)`` hook (metrics).

After a rollback no alarm can be raised for ``cooldown`` windows, doubled for each further
rollback in a row (reset when a probation passes): the drift that caused the retraining
is still there. A retraining already running is left to finish.

State that survives a restart (:class:`~ray_mlops.monitor.state.MonitorState`): the open
window, the stream, verdict summaries, the retraining book (written *before* a launch, so
a restart never launches twice), the shadow book and the probation book (each written
*before* its action, which a restart completes) and the keys of recent records. On restart the records the replicas
logged after the last checkpoint are read back and de-duplicated by key, so no
acknowledged record is lost or doubled.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable

import pandas as pd

from ray_mlops.config import Config, MonitorConfig
from ray_mlops.contracts import PREDICTIONS_DIR, REQUIRED_META
from ray_mlops.data.schema import feature_schema
from ray_mlops.errors import RayMlopsError
from ray_mlops.monitor.drift import DriftStream
from ray_mlops.monitor.probation import ROLLED_BACK, Probation, ProbationTracker
from ray_mlops.monitor.reference import validation_accuracy
from ray_mlops.monitor.retraining import SHADOWED, Launcher, RetrainOutcome, RetrainTracker
from ray_mlops.monitor.shadow import PROMOTED, ShadowTracker, ShadowTrial, resume_trial
from ray_mlops.monitor.state import MonitorState, MonitorStatus
from ray_mlops.monitor.store import FeedbackIndex, MonitorStore
from ray_mlops.monitor.tester import VerdictSummary, WindowTester, now_iso, summarize, verdict_record
from ray_mlops.monitor.window import KEY_HORIZON_S, Inbox, WindowCutter
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

CATCH_UP_SLACK_S = 3.0  # how far before the last checkpoint a restart re-reads the log
assert CATCH_UP_SLACK_S < KEY_HORIZON_S, "the cutter must remember every record a catch-up can re-read"
MAX_BACKLOG_WINDOWS = 20


class Monitor:
    """Windows of prediction records tested against the production version's reference."""

    def __init__(self, config: Config, storage: Storage, *, launcher: Launcher | None = None,
                 rollback: Callable[[dict], dict] | None = None, shadow_action: Callable[[dict], dict] | None = None,
                 observe: Callable[[str, dict], None] = lambda kind, payload: None,
                 clock: Callable[[], float] = time.time):
        self.config, self.cfg, self.observe, self.clock = config, config.monitor, observe, clock
        self.store, self.registry = MonitorStore(storage), Registry(storage, config.model_name)
        self.schema = feature_schema(config)
        self.required = [*self.schema.features, *REQUIRED_META]
        self.tester = WindowTester(self.registry, self.schema, self.cfg, FeedbackIndex(self.store))
        self._launcher, self._rollback, self._shadow_action = launcher, rollback, shadow_action
        self._event = functools.partial(record_event, self.store)  # the monitor's own log, never the registry's
        self.inbox = Inbox()
        self._dirty, self._last_checkpoint = False, 0.0
        self._resume()

    def _compose(self, state: MonitorState) -> None:
        """The parts, each around its own piece of ``state``."""
        cfg = self.cfg
        self.state = state
        self.cutter = WindowCutter(self.required, window_size=cfg.window_size, min_window=cfg.min_window,
                                   window_max_s=cfg.window_max_s, state=state.cutter, clock=self.clock)
        self.stream = DriftStream.from_state(state.stream)
        self.retraining = RetrainTracker(self._launcher, enabled=cfg.retrain.enabled, book=state.retrain,
                                         clock=self.clock, event=self._event)
        self.probation, self.shadowing = probation_tracker(self, self._rollback), shadow_tracker(self, self._shadow_action)

    # -- receiving (the cheap path) -----------------------------------------------------
    def receive(self, records: Any) -> int:
        """Queue a frame of prediction records; returns the rows accepted (never raises)."""
        problem = schema_problem(records, self.required)
        self.inbox.put(records, problem)
        return 0 if problem is not None else len(records)

    # -- the background step -------------------------------------------------------------
    def step(self) -> list[dict]:
        """Merge received records, test every full window, follow retraining, checkpoint.

        Returns the verdicts of the windows tested in this step.
        """
        self._take_inbox()
        pending = self.probation.pending()
        if pending is not None:
            self._roll_back(pending)  # decided before a restart
        if self.shadowing.pending() is not None:
            self._shadow_act(self.shadowing.pending())  # decided before a restart
        self._follow_production()
        verdicts = []
        while self.tester.reference is not None and self.cutter.due():
            verdicts.append(self._cut_and_test())
        self._follow_retrain()
        self._checkpoint(force=bool(verdicts))
        return verdicts

    def _merge(self, incoming: list[pd.DataFrame]) -> None:
        if not incoming:
            return
        self.cutter.add(incoming)
        self.shadowing.add(incoming)
        if self.tester.reference is None:  # nothing can be tested: keep a bounded backlog
            cap_backlog(self.cutter, MAX_BACKLOG_WINDOWS * self.cfg.window_size, self._event)
        self._dirty = True

    def _take_inbox(self) -> None:
        incoming, rejected = self.inbox.take()
        if rejected:
            self.state.bad_records += len(rejected)
            self.observe("bad_records", {"batches": len(rejected)})
            self._event("monitor_bad_records", batches=len(rejected), first=rejected[0],
                        expected=self.required[:3] + ["…"] + list(REQUIRED_META))
        self._merge(incoming)

    def _follow_production(self) -> None:
        """The reference follows the production alias."""
        reference = self.tester.follow(self._event)
        if reference is None:
            return
        production = reference.version
        previous, self.state.reference_version = self.state.reference_version, production
        self.stream.streak = 0  # a new model starts a new streak
        self.observe("reference", {"version": production, "previous": previous})
        if previous != production:
            self._event("monitor_reference", version=production, previous=previous, reference=reference.describe())
        self.probation.on_production_moved(production, previous, reference.reference_accuracy)
        self.shadowing.on_production_moved(production)
        self._dirty = True

    # -- one window --------------------------------------------------------------------
    def _cut_and_test(self) -> dict:
        window = self.cutter.cut()
        index = self.state.windows + self.state.skipped_windows
        try:
            tested = self.tester.test(window)
        except (ValueError, TypeError, KeyError) as exc:  # records of an unexpected type
            self.state.skipped_windows += 1
            self._event("monitor_bad_window", index=index, rows=len(window), error=str(exc)[:500])
            return {"index": index, "skipped": True, "error": str(exc)}
        verdict = self.stream.observe(tested.report)
        full = verdict_record(index, window, tested, verdict, self.tester.version, self.clock())
        self._after_window(record_verdict(self, index, full), verdict.alarm)
        return full

    def _after_window(self, summary: VerdictSummary, alarm: bool) -> None:
        """Probation first (a rollback answers the alarm), the shadow trial, then the alarm."""
        probation = self.probation.observe(summary, self.tester.version)
        rolled_back = probation is not None and self._roll_back(probation, write_ahead=True)
        decided = self.shadowing.observe_window()
        promoted = decided is not None and self._shadow_act(decided) == PROMOTED
        held = _held_alarm_reason(rolled_back, promoted, self.shadowing.trial is not None)
        if alarm and held:  # the window was judged against a production that is gone, or a trial runs
            self._event("monitor_alarm", window=summary.index, action=f"none: {held}")
        elif alarm:
            self._on_alarm(summary)

    # -- retraining --------------------------------------------------------------------
    def _on_alarm(self, summary: VerdictSummary) -> None:
        streak = [v for v in self.state.verdicts if v.index > summary.index - self.cfg.patience]
        failed = self.retraining.on_alarm(summary, min(v.start for v in streak), self.tester.version,
                                          write_ahead=lambda: self._checkpoint(force=True))
        if failed is not None:
            self._retrain_finished(failed)
        self._dirty = True

    def _follow_retrain(self) -> None:
        launched = getattr(self.state.retrain.active, "launched", None)
        finished = self.retraining.follow()
        if finished is not None:
            self._retrain_finished(finished)
        elif getattr(self.state.retrain.active, "launched", None) != launched:
            self._dirty = True  # a job a restart left unlaunched was launched

    def _retrain_finished(self, entry: RetrainOutcome) -> None:
        self.observe("retrain", entry.to_dict())
        if entry.status == SHADOWED:
            start_trial(self, entry)
        self._checkpoint(force=True)

    # -- shadow ------------------------------------------------------------------------
    def _shadow_act(self, trial: ShadowTrial) -> str:
        """Promote or discard, written ahead: a restart completes this action, never a second one."""
        self._checkpoint(force=True)
        status = self.shadowing.execute(trial)
        self._dirty = True
        self._checkpoint(force=True)
        if status == PROMOTED:
            self._follow_production()  # probation starts as for any promotion by the loop
        return status

    # -- probation ---------------------------------------------------------------------
    def _roll_back(self, probation: Probation, write_ahead: bool = False) -> bool:
        if write_ahead:
            self._checkpoint(force=True)  # a restart completes this rollback, never a second one
        status = self.probation.execute(probation)
        if status == ROLLED_BACK:  # the drift behind the retraining is still there: hold alarms
            self.stream.streak = 0
            self.stream.cooldown_left = max(self.stream.cooldown_left, self.probation.hold_windows())
        self._dirty = True
        self._checkpoint(force=True)
        if status == ROLLED_BACK:
            self._follow_production()
        return status == ROLLED_BACK

    # -- state -------------------------------------------------------------------------
    def _resume(self) -> None:
        saved = self.store.load_state()
        self._compose(initial_state(self.cfg) if saved is None else MonitorState.from_json(saved))
        if saved is None:  # a first checkpoint at once: a restart always knows where to catch up from
            self._dirty = True
            self._checkpoint(force=True)
            return
        self.state.restarts += 1
        self.cutter.restore(self.store.load_window())
        logged = logged_since(self.store, self.state.checkpoint_time, self.required)  # lost from memory
        before = self.state.cutter.records
        self._merge([] if logged is None else [logged])
        recovered = self.state.cutter.records - before
        resume_trial(self.shadowing, self.store.storage, self.tester.labels.labels)  # pairs, labels since it started
        self._event("monitor_restarted", restarts=self.state.restarts, window_rows=self.cutter.rows,
                    recovered=recovered, retrain=getattr(self.state.retrain.active, "id", None))

    def _checkpoint(self, force: bool = False) -> None:
        now = self.clock()
        if not force and (not self._dirty or now - self._last_checkpoint < self.cfg.checkpoint_interval_s):
            return
        self.state.stream, self.state.checkpoint_time = self.stream.to_state(), now
        if save_checkpoint(self.store, self.state, self.cutter.window, self.observe):
            self._dirty, self._last_checkpoint = False, now

    # -- reading -----------------------------------------------------------------------
    def status(self) -> MonitorStatus:
        """The monitor now (see :class:`~ray_mlops.monitor.state.MonitorStatus`)."""
        return live_status(self)

    def flush_checkpoint(self) -> None:
        """Merge what was received and write a checkpoint now (before a planned stop)."""
        self._take_inbox()
        self._checkpoint(force=True)


def start_trial(monitor: Monitor, entry: RetrainOutcome) -> None:
    """A retraining put its candidate in shadow: start the trial, with the pairs logged since it was deployed."""
    monitor.shadowing.start(entry.version, entry.production_before or "", retrain=entry.id,
                            started=entry.shadow_started)
    resume_trial(monitor.shadowing, monitor.store.storage, monitor.tester.labels.labels)


def record_verdict(monitor: Monitor, index: int, full: dict) -> VerdictSummary:
    """Store a tested window's verdict, count it, keep its summary; returns the summary."""
    monitor.store.save_verdict(index, full)
    summary = summarize(full)
    monitor.state.windows += 1
    monitor.state.verdicts = (monitor.state.verdicts + [summary])[-monitor.cfg.history:]
    monitor.observe("window", full)
    monitor._event("monitor_window", **summary.to_dict())
    return summary


def cap_backlog(cutter: WindowCutter, limit: int, event: Callable[..., None]) -> None:
    """Keep the newest ``limit`` records while nothing can be tested (no production reference yet)."""
    dropped = cutter.cap(limit)
    if dropped:
        event("monitor_backlog_dropped", records=dropped, reason="no production reference")


def probation_tracker(monitor: Monitor, rollback: Callable[[dict], dict] | None) -> ProbationTracker:
    """The probation part, around its book in the monitor's state."""
    cfg = monitor.cfg
    return ProbationTracker(rollback, windows=cfg.probation_windows, alpha=cfg.alpha, cooldown=cfg.cooldown,
                            history=cfg.history, event=monitor._event, book=monitor.state.probation,
                            now=lambda: now_iso(monitor.clock()), metadata=monitor.registry.metadata,
                            metrics=monitor.observe)


def _held_alarm_reason(rolled_back: bool, promoted: bool, in_shadow: bool) -> str | None:
    """Why a window's alarm launches no retraining (None: it may launch one)."""
    if rolled_back:
        return "production rolled back"
    if promoted:
        return "production moved to the candidate"
    return "a candidate is in shadow" if in_shadow else None


def shadow_tracker(monitor: Monitor, action: Callable[[dict], dict] | None) -> ShadowTracker:
    """The shadow part, around its book in the monitor's state; labels from the tester's feedback index."""
    cfg = monitor.cfg
    return ShadowTracker(action, cfg.shadow, task=monitor.schema.task, min_labels=cfg.min_labels,
                         labels=monitor.tester.labels.lookup, event=monitor._event, book=monitor.state.shadow,
                         now=lambda: now_iso(monitor.clock()), canary_alpha=cfg.alpha,
                         reference_accuracy=lambda version: validation_accuracy(monitor.registry.metadata(version)))


def live_status(monitor: Monitor) -> MonitorStatus:
    """A running monitor's status: its state plus what only it knows (open rows, reference, stream)."""
    reference = None if monitor.tester.reference is None else monitor.tester.reference.describe()
    return MonitorStatus.of(monitor.state, running=True, reference=reference, window_size=monitor.cfg.window_size,
                            open_window_rows=monitor.cutter.rows + monitor.inbox.rows(), streak=monitor.stream.streak,
                            cooldown_left=monitor.stream.cooldown_left)


def record_event(store: MonitorStore, kind: str, **fields: Any) -> None:
    """An event in the monitor's own log; a failure to record it is logged, never raised."""
    try:
        store.record_event(kind, **fields)
    except (RayMlopsError, TypeError, ValueError) as exc:
        log.error("monitor: cannot record event %s: %s", kind, exc)


def schema_problem(records: Any, required: list[str]) -> str | None:
    """Why a frame cannot be prediction records (None: it can)."""
    if not isinstance(records, pd.DataFrame):
        return f"expected a pandas DataFrame of prediction records, got {type(records).__name__}"
    missing = [c for c in required if c not in records.columns]
    if missing:
        return f"{len(records)} records lack columns {missing[:5]}" + (" …" if len(missing) > 5 else "")
    return None


def logged_since(store: MonitorStore, since: float | None, required: list[str]) -> pd.DataFrame | None:
    """The prediction records the replicas logged since ``since`` (a checkpoint time), if any.

    Every file written since :data:`CATCH_UP_SLACK_S` before ``since``: a replica sends a
    frame to the monitor just before it writes the file, and the cutter remembers the key
    of every record it cut in the last :data:`~ray_mlops.monitor.window.KEY_HORIZON_S`
    seconds, so no record re-read here is counted twice.
    """
    if since is None:
        return None
    try:
        logged = store.read_files(store.recent_files(PREDICTIONS_DIR, since - CATCH_UP_SLACK_S))
    except RayMlopsError as exc:
        log.warning("monitor: cannot read the prediction log to catch up: %s", exc)
        return None
    return None if logged.empty or schema_problem(logged, required) is not None else logged


def initial_state(cfg: MonitorConfig) -> MonitorState:
    """A first start's state: nothing seen, a fresh drift stream."""
    stream = DriftStream(None, patience=cfg.patience, cooldown=cfg.cooldown, max_history=cfg.history)
    return MonitorState(started=now_iso(), stream=stream.to_state())


def save_checkpoint(store: MonitorStore, state: MonitorState, window: pd.DataFrame,
                    observe: Callable[[str, dict], None]) -> bool:
    """Write the open window and the state; False when storage is down (retried at the next step)."""
    try:
        store.save_window(window)
        store.save_state(state.to_json())
    except RayMlopsError as exc:
        log.error("monitor: checkpoint failed: %s", exc)
        observe("checkpoint_failed", {"error": str(exc)})
        return False
    return True


__all__ = ["Monitor", "Launcher", "schema_problem"]
