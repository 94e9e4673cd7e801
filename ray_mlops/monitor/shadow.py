"""Shadow evaluation: a retrained candidate earns production on live labeled traffic.

A retraining whose candidate passed the offline paired gate deploys it as a *shadow*
(``ray_mlops.serve.shadow``): it predicts beside production on every logged batch, and
the prediction log carries both answers (:data:`ray_mlops.contracts.SHADOW_COLUMNS`).
:class:`ShadowTracker` keeps the trial:

1. :meth:`ShadowTracker.add` collects the *pairs*: logged records that production
   answered and the candidate shadowed (de-duplicated by record key);
2. after each tested window, the ``/feedback`` labels that came back
   (:class:`~ray_mlops.monitor.store.FeedbackIndex`) are joined to the pairs; the online
   paired test (:func:`ray_mlops.gate_stats.paired_test`, ``monitor.shadow.metric``,
   ``require``, ``margin``, ``alpha``) runs **once**, the first time ``min_rows`` labeled
   pairs exist or ``windows`` windows passed with at least ``monitor.min_labels`` of them;
3. it passed: the candidate is promoted (registry, then the Serve swap; probation then
   applies as to any promotion by the loop); it failed: the shadow is discarded
   (production serves alone); after ``max_windows`` windows with too few labels it is
   discarded too. Every step is a ``monitor_shadow`` event.

The action is injected (``action(plan) -> outcome``; :func:`promote_or_discard` in the
actor). The monitor checkpoints after the decision and before the action (write-ahead),
so a restart completes a decided action (:meth:`ShadowTracker.pending`) and never runs a
second one. A restart mid-shadow keeps the trial (its book is in the checkpoint) and
rebuilds the pairs and labels from the logs since the shadow started (:func:`trial_log`).

**Canary** (``serve.canary_fraction``): the canary rows are answered by the candidate. After
each window, probation's accuracy test (one-sided Fisher,
:class:`~ray_mlops.monitor.drift.PerformanceDriftDetector`) compares the candidate's accuracy
on the labeled canary rows with the accuracy it was registered with, at level
``monitor.alpha / max_windows`` (Bonferroni over the trial's looks); a significantly worse
canary is withdrawn at once (the shadow, and with it the canary, is discarded).

One test per trial: the stopping rule looks only at how many labels came back, never at
the outcomes, so the online test keeps its level ``alpha``.

>>> import pandas as pd
>>> from ray_mlops.config import ShadowConfig
>>> tracker = ShadowTracker(None, ShadowConfig(windows=1, min_rows=10), task="classification", min_labels=4,
...                         labels=lambda keys: pd.Series([1, 0, 1, 1], index=keys.index))
>>> tracker.start("v2", "v1", retrain="r1")
>>> tracker.add([pd.DataFrame({"request_id": "a", "row": range(4), "model_version": "v1", "shadow_version": "v2",
...                            "prediction": [0, 0, 0, 1], "shadow_prediction": [1, 0, 1, 1]})])
4
>>> trial = tracker.observe_window()
>>> trial.decision, trial.test["test"], trial.test["rows"], trial.test["estimate"]
('discard', 'mcnemar_exact', 4, 0.5)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pandas as pd

from ray_mlops.config import Config, ShadowConfig
from ray_mlops.contracts import FEEDBACK_DIR, PREDICTIONS_DIR, read_partitioned, record_keys, with_shadow_columns
from ray_mlops.errors import AliasMovedError, RayMlopsError
from ray_mlops.gate_stats import paired_test
from ray_mlops.monitor._records import Record, dump_book, load_book
from ray_mlops.monitor.drift import PerformanceDriftDetector
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage
from ray_mlops.train.metrics import CLASSIFICATION_METRICS

log = logging.getLogger(__name__)

SHADOWING, PROMOTING, DISCARDING = "shadowing", "promoting", "discarding"
PROMOTED, DISCARDED, SUPERSEDED, FAILED = "promoted", "discarded", "superseded", "failed"
PAIR_COLUMNS = ("prediction", "probabilities", "shadow_prediction", "shadow_probabilities", "canary")
MAX_PAIRS = 200_000


@dataclass(frozen=True)
class ShadowTrial(Record):
    """One candidate in shadow (a checkpointable record; the tracker replaces it as the trial goes on)."""

    candidate: str
    production: str
    retrain: str | None = None
    started: str | None = None  # when it was deployed: a restart re-reads the logs from here
    windows: int = 0
    labeled: int = 0
    status: str = SHADOWING
    decision: str | None = None  # "promote" or "discard"
    reason: str | None = None
    test: dict[str, Any] | None = None  # PairedTest.to_json()
    outcome: dict[str, Any] | None = None  # what the promote or discard action returned
    ended: str | None = None

    def plan(self) -> dict[str, Any]:
        """What the action needs."""
        return {"decision": self.decision, "candidate": self.candidate, "production": self.production,
                "retrain": self.retrain, "reason": self.reason, "test": self.test}


@dataclass
class ShadowBook:
    """The trial running (or None) and the ended ones."""

    active: ShadowTrial | None = None
    history: list[ShadowTrial] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's layout of the book."""
        return dump_book(self.active, self.history)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ShadowBook":
        """Read the book from a checkpoint (one from before shadows has none: it starts fresh)."""
        return cls(*load_book(ShadowTrial, ShadowTrial, raw))


# -- the statistics of one trial ------------------------------------------------------------
def shadow_pairs(frame: pd.DataFrame, candidate: str, production: str) -> pd.DataFrame:
    """Records ``production`` answered and ``candidate`` shadowed, by record key (index)."""
    frame = with_shadow_columns(frame)
    mask = (frame["shadow_version"].astype(str) == candidate) & (frame["model_version"].astype(str) == production)
    rows = frame[mask.to_numpy()]
    columns = {c: rows[c].to_numpy() if c in rows else None for c in PAIR_COLUMNS}
    return pd.DataFrame(columns, index=pd.Index(record_keys(rows), name="key"))


def _one_hot(values: np.ndarray, classes: list) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.eye(len(classes))[[index[v] for v in values]]


def online_test(labeled: pd.DataFrame, cfg: ShadowConfig, task: str) -> Any:
    """The paired test of the candidate against production on labeled pairs (``label`` column)."""
    if task != "classification":
        metric = "rmse" if cfg.metric in CLASSIFICATION_METRICS else cfg.metric
        return paired_test(labeled["label"].astype(float).to_numpy(), labeled["prediction"].astype(float).to_numpy(),
                           labeled["shadow_prediction"].astype(float).to_numpy(), metric=metric, margin=cfg.margin,
                           alpha=cfg.alpha, require=cfg.require)
    y = labeled["label"].to_numpy(dtype=object)
    classes = sorted({*y, *labeled["prediction"], *labeled["shadow_prediction"]}, key=lambda c: (str(type(c)), c))
    if cfg.metric == "accuracy":
        production, candidate = (_one_hot(labeled[c].to_numpy(dtype=object), classes)
                                 for c in ("prediction", "shadow_prediction"))
    else:  # probabilities in the models' classes_ order (sorted, as scikit-learn's)
        production, candidate = (np.stack(labeled[c].to_numpy()) for c in ("probabilities", "shadow_probabilities"))
        if production.shape[1] != len(classes) or candidate.shape != production.shape:
            raise ValueError(f"monitor.shadow.metric {cfg.metric!r} needs both models' probabilities over the "
                             f"same {len(classes)} classes; use accuracy")
    return paired_test(y, production, candidate, metric=cfg.metric, margin=cfg.margin, alpha=cfg.alpha,
                       require=cfg.require, classes=classes)


# -- the tracker ----------------------------------------------------------------------------
class ShadowTracker:
    """Keeps the shadow trial (see the module docstring).

    ``action(plan) -> outcome`` promotes or discards (None: shadows are never started);
    ``labels(keys) -> Series`` gives the label of each record key (NaN: none yet);
    ``event(kind, **fields)`` records what happened; ``reference_accuracy(version) -> (correct,
    total)`` (or None) is what the canary rows are tested against, at level ``canary_alpha``
    spread over ``max_windows`` looks.
    """

    def __init__(self, action: Callable[[dict], dict] | None, cfg: ShadowConfig, *, task: str, min_labels: int,
                 labels: Callable[[pd.Series], pd.Series], event: Callable[..., None] = lambda kind, **f: None,
                 book: ShadowBook | None = None, now: Callable[[], str] = lambda: "", history: int = 50,
                 reference_accuracy: Callable[[str], tuple[int, int] | None] = lambda version: None,
                 canary_alpha: float = 0.01):
        self.action, self.cfg, self.task, self.min_labels, self.labels = action, cfg, task, min_labels, labels
        self.event, self.book, self.now, self.keep = event, book or ShadowBook(), now, history
        self.reference_accuracy, self.canary_alpha = reference_accuracy, canary_alpha
        self.pairs = pd.DataFrame(columns=list(PAIR_COLUMNS), index=pd.Index([], name="key"))

    @property
    def trial(self) -> ShadowTrial | None:
        """The running trial, if any."""
        return self.book.active

    def start(self, candidate: str, production: str, *, retrain: str | None = None, started: str | None = None) -> None:
        """A retraining deployed ``candidate`` as the shadow of ``production`` (at ``started``, an ISO time)."""
        if self.book.active is not None:
            self._close(self.trial, SUPERSEDED, reason=f"{candidate} shadowed instead")
        trial = ShadowTrial(candidate, production, retrain=retrain, started=started or self.now())
        self.book.active, self.pairs = trial, self.pairs.iloc[:0]
        self.event("monitor_shadow", action="started", candidate=candidate, production=production, retrain=retrain,
                   windows=self.cfg.windows, min_rows=self.cfg.min_rows, max_windows=self.cfg.max_windows)

    def add(self, frames: list[pd.DataFrame]) -> int:
        """Collect the pairs of the running trial from prediction records; returns how many were new."""
        trial = self.trial
        if trial is None or trial.status != SHADOWING or not frames:
            return 0
        fresh = [shadow_pairs(f, trial.candidate, trial.production) for f in frames]
        fresh = [f for f in fresh if len(f)]
        if not fresh:
            return 0
        before = len(self.pairs)
        merged = pd.concat([self.pairs, *fresh]) if before else pd.concat(fresh)
        self.pairs = merged[~merged.index.duplicated(keep="first")].iloc[-MAX_PAIRS:]
        return len(self.pairs) - before

    def resume(self, predictions: pd.DataFrame) -> int:
        """After a restart: collect the pairs again from the records logged since the trial started."""
        self.pairs = self.pairs.iloc[:0]
        return self.add([predictions]) if len(predictions) else 0

    def labeled(self) -> pd.DataFrame:
        """The pairs whose label came back, with a ``label`` column."""
        keys = pd.Series(self.pairs.index, index=self.pairs.index)
        return self.pairs.assign(label=self.labels(keys)).dropna(subset=["label"])

    def observe_window(self) -> ShadowTrial | None:
        """Count one tested window; the trial to act on when this window decided it."""
        trial = self.trial
        if trial is None or trial.status != SHADOWING:
            return None
        labeled = self.labeled()
        trial = replace(trial, windows=trial.windows + 1, labeled=len(labeled))
        enough = len(labeled) >= self.cfg.min_rows or (
            trial.windows >= self.cfg.windows and len(labeled) >= self.min_labels)
        worse = self._canary_worse(trial, labeled)
        if worse is not None:
            trial = replace(trial, status=DISCARDING, decision="discard", reason=worse)
        elif enough:
            trial = self._decide(trial, labeled)
        elif trial.windows >= self.cfg.max_windows:
            trial = replace(trial, status=DISCARDING, decision="discard",
                            reason=f"only {len(labeled)} labeled pairs after {trial.windows} windows "
                                   f"(at least {self.min_labels} needed): labels did not come")
        self.book.active = trial
        if trial.status == SHADOWING:
            return None
        self.event("monitor_shadow", action=trial.status, candidate=trial.candidate, production=trial.production,
                   windows=trial.windows, labeled=trial.labeled, reason=trial.reason, test=trial.test)
        return trial

    def _canary_worse(self, trial: ShadowTrial, labeled: pd.DataFrame) -> str | None:
        """Why the canary must be withdrawn (its labeled rows significantly worse than its reference), or None."""
        canary = labeled[labeled["canary"].fillna(False).astype(bool).to_numpy()] if "canary" in labeled else labeled
        if "canary" not in labeled or len(canary) < self.min_labels or self.task != "classification":
            return None
        try:
            counts = self.reference_accuracy(trial.candidate)
        except RayMlopsError as exc:
            log.warning("monitor: no reference accuracy for canary %s: %s", trial.candidate, exc)
            return None
        if not counts:
            return None
        correct = int((canary["shadow_prediction"].to_numpy(dtype=object) == canary["label"].to_numpy(dtype=object)).sum())
        p_value = PerformanceDriftDetector.from_counts(*counts).test_counts(correct, len(canary)).p_value
        level = self.canary_alpha / self.cfg.max_windows
        if p_value > level:
            return None
        return (f"canary withdrawn: accuracy {correct}/{len(canary)} on canary rows vs {counts[0]}/{counts[1]} "
                f"it was registered with (one-sided Fisher p={p_value:.3g} <= {level:.3g})")

    def _decide(self, trial: ShadowTrial, labeled: pd.DataFrame) -> ShadowTrial:
        try:
            test = online_test(labeled, self.cfg, self.task)
        except ValueError as exc:  # records the test cannot use: the candidate is not shown better
            return replace(trial, status=DISCARDING, decision="discard", reason=f"online test impossible: {exc}")
        return replace(trial, test=test.to_json(), decision="promote" if test.passed else "discard",
                       status=PROMOTING if test.passed else DISCARDING,
                       reason=f"online paired gate on live labeled rows: {test.describe()}")

    def pending(self) -> ShadowTrial | None:
        """An action decided before a restart, not completed yet."""
        trial = self.trial
        return trial if trial is not None and trial.status in (PROMOTING, DISCARDING) and self.action else None

    def execute(self, trial: ShadowTrial) -> str:
        """Run the promote or discard action once; returns the trial's final status."""
        try:
            outcome = dict(self.action(trial.plan()))
        except Exception as exc:  # the action itself broke: recorded, not retried
            outcome = {"status": FAILED, "error": f"{type(exc).__name__}: {exc}"[:500]}
        status = outcome.get("status") if outcome.get("status") in (PROMOTED, DISCARDED, SUPERSEDED) else FAILED
        self._close(replace(trial, outcome=outcome), status)
        return status

    def on_production_moved(self, production: str) -> None:
        """Production moved away from the trial's (an operator, a rollback): the trial is moot."""
        trial = self.trial
        if trial is not None and trial.status == SHADOWING and production not in (trial.production, trial.candidate):
            self._close(trial, SUPERSEDED, reason=f"production moved to {production}")

    def _close(self, trial: ShadowTrial, status: str, reason: str | None = None) -> None:
        ended = replace(trial, status=status, ended=self.now(), reason=reason or trial.reason)
        self.book.active, self.pairs = None, self.pairs.iloc[:0]
        self.book.history = (self.book.history + [ended])[-self.keep:]
        because = {} if reason is None else {"reason": reason}
        self.event("monitor_shadow", action=status, candidate=trial.candidate, production=trial.production,
                   outcome=trial.outcome, **because)


def trial_log(storage: Storage, since: str | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The prediction records and the labels (by record key) logged since ``since`` (a restart's catch-up)."""
    predictions = read_partitioned(storage, PREDICTIONS_DIR, since)
    feedback = read_partitioned(storage, FEEDBACK_DIR, since)
    labels = dict(zip(record_keys(feedback), feedback["label"])) if len(feedback) else {}
    return predictions, labels


def resume_trial(tracker: ShadowTracker, storage: Storage, labels: dict[str, Any]) -> int:
    """A restart mid-shadow: the pairs logged since the trial started, their labels into ``labels``."""
    trial = tracker.trial
    if trial is None or trial.status != SHADOWING:
        return 0
    try:
        predictions, found = trial_log(storage, trial.started)
    except (RayMlopsError, OSError, ValueError) as exc:  # the trial goes on with what arrives from now on
        log.warning("monitor: cannot re-read the shadow's log: %s", exc)
        return 0
    labels.update(found)
    return tracker.resume(predictions)


# -- the real action ------------------------------------------------------------------------
def promote_or_discard(config: Config, storage: Storage, plan: dict, *, swap: Any = None) -> dict:
    """Promote the candidate (registry, then the Serve swap) or discard the shadow (Serve only).

    ``swap(config, version)`` moves Serve's production (which removes the shadow);
    ``swap.set_shadow(config, None)`` removes the shadow. A promotion happens only while
    production still names the version the candidate was shadowed against; a failed swap
    points production back, so the registry never names a version Serve does not run.
    """
    if plan["decision"] != "promote":
        _remove_shadow(config, swap)
        return {"status": DISCARDED, "candidate": plan["candidate"]}
    registry = Registry(storage, config.model_name)
    candidate = plan["candidate"]
    if registry.get_alias("production") != plan["production"]:
        _remove_shadow(config, swap)
        return {"status": SUPERSEDED, "candidate": candidate, "reason": "production moved meanwhile"}
    try:
        registry.promote(candidate, reason=plan["reason"], scores={"online_test": plan.get("test")})
        served = None if swap is None else swap(config, candidate)
    except AliasMovedError as exc:
        return {"status": SUPERSEDED, "candidate": candidate, "reason": str(exc)}
    except Exception as exc:  # Serve still runs production: the registry says so again
        error = f"{type(exc).__name__}: {exc}"[:500]
        if registry.get_alias("production") == candidate:
            registry.rollback(reason=f"shadow promotion of {candidate} not served ({error})", expected=candidate)
        return {"status": FAILED, "candidate": candidate, "stage": "swap", "error": error}
    return {"status": PROMOTED, "candidate": candidate, "served": None if served is None else str(served)}


def _remove_shadow(config: Config, swap: Any) -> None:
    setter = getattr(swap, "set_shadow", None)
    if setter is None:
        return
    try:
        setter(config, None)
    except (RayMlopsError, RuntimeError) as exc:  # production keeps serving; the shadow only costs CPU
        log.error("monitor: cannot remove shadow: %s", exc)


__all__ = ["ShadowTracker", "ShadowTrial", "ShadowBook", "shadow_pairs", "online_test", "trial_log", "resume_trial",
           "promote_or_discard", "PROMOTED", "DISCARDED"]
