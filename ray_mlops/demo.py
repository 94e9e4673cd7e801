"""``ray-mlops demo``: the whole loop, from nothing, on the embedded local Ray.

generate → ingest → train (gate, promote) → serve → monitor → traffic without drift →
drift begins (the traffic drifts and a new labeled batch lands in the data root) →
drift confirmed → retraining (re-ingest, search, gate on post-drift data) → promotion →
hot swap under traffic → the drifted records are sent again to the new version → the
monitor follows the new reference. Prints a timeline and the figures the loop is judged by
(live accuracy before drift, after drift and after promotion, each with a Wilson 95%
interval and its row count, and the two versions compared on the same labeled records),
writes them to ``<workdir>/summary.json`` and an HTML report with live accuracy over time.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ray_mlops.config import Config
from ray_mlops.errors import ConfigError, MonitorError
from ray_mlops.live_accuracy import LiveAccuracy, LiveComparison, accuracy, paired, select, series
from ray_mlops.storage import Storage

if TYPE_CHECKING:
    from ray_mlops.monitor.retraining import RetrainOutcome
    from ray_mlops.monitor.shadow import ShadowTrial
    from ray_mlops.monitor.state import MonitorStatus
    from ray_mlops.monitor.tester import VerdictSummary
    from ray_mlops.traffic import Answer


@dataclass
class DemoOptions:
    """Sizes and pacing of the demo (the defaults fit 2 cores and ~4 minutes)."""

    workdir: Path = Path("demo")
    storage: str | None = None    # a storage URI (e.g. s3://bucket/demo); default <workdir>/store
    entities: int = 1500          # the initial labeled dataset
    traffic_entities: int = 800   # machines sent without drift
    drift_entities: int = 800     # machines sent once drift begins (cycled)
    new_entities: int = 1500      # the labeled batch that lands when drift begins
    drift: str = "concept"        # moves the decision boundary: v1 gets worse, retraining can recover
    intensity: float = 1.0
    window: int = 200
    baseline_windows: int = 4
    after_windows: int = 3
    trials: int = 4
    rate: float = 100.0           # records per second
    port: int = 8000
    seed: int = 0
    timeout_s: float = 600.0


@dataclass
class Timeline:
    """Timestamped steps, printed as they happen."""

    echo: Callable[[str], None]
    started: float = field(default_factory=time.monotonic)
    rows: list[dict] = field(default_factory=list)

    def __call__(self, event: str, detail: str = "") -> float:
        t = time.monotonic() - self.started
        self.rows.append({"t": f"{t:6.1f}s", "event": event, "detail": detail})
        self.echo(f"[{t:6.1f}s] {event:<22} {detail}")
        return t


# -- data ----------------------------------------------------------------------------------
def _generate(opts: DemoOptions, data_root: Path, log: Timeline) -> dict[str, Path]:
    from ray_mlops.data.generate import GenerateSpec, generate

    pools = opts.workdir / "pools"
    specs = {
        "data": (data_root, GenerateSpec(entities=opts.entities, seed=opts.seed)),
        "traffic": (pools / "traffic", GenerateSpec(entities=opts.traffic_entities, seed=opts.seed + 101,
                                                    start_id=1_000_000)),
        "drift_traffic": (pools / "drift_traffic", GenerateSpec(entities=opts.drift_entities, seed=opts.seed + 102,
                                                                drift=opts.drift, intensity=opts.intensity,
                                                                start_id=2_000_000)),
        "new_batch": (pools / "new_batch", GenerateSpec(entities=opts.new_entities, seed=opts.seed + 103,
                                                        drift=opts.drift, intensity=opts.intensity, start_id=3_000_000)),
    }
    for name, (folder, spec) in specs.items():
        marker = folder / ".demo-spec"
        wanted = repr(spec)
        if marker.exists() and marker.read_text() == wanted:
            continue
        if folder.exists():
            shutil.rmtree(folder)
        counts = generate(folder, spec)
        marker.write_text(wanted)
        log("generate", f"{name}: {counts['machines']} machines ({spec.drift}, failure rate {counts['failure_rate_pct']}%)")
    return {name: folder for name, (folder, _) in specs.items()}


def demo_config(config: Config, opts: DemoOptions) -> Config:
    """``config`` pointed at the demo folder, with the demo's window size and trial count."""
    raw = config.model_dump(mode="json")
    raw["data"]["root"] = str((opts.workdir / "data").resolve())
    raw["storage"] = opts.storage or str((opts.workdir / "store").resolve())
    raw["serve"]["port"] = opts.port
    raw["train"]["num_samples"] = opts.trials
    raw["monitor"]["window_size"] = opts.window
    raw["monitor"]["min_window"] = min(raw["monitor"]["min_window"], opts.window)
    raw["monitor"]["retrain"]["num_samples"] = opts.trials
    # The demo cycles through a few hundred drifted machines: labeled log rows used for
    # training would come back as traffic the new model has memorized (sharper scores
    # than its out-of-sample reference). Keep them all for the gate's holdout instead.
    raw["monitor"]["retrain"]["log_train_fraction"] = 0.0
    return Config.model_validate(raw)


def _fresh_storage(config: Config, opts: DemoOptions) -> Storage:
    """The demo's own storage is wiped; one the user named must be empty (never wiped)."""
    if opts.storage is None:
        shutil.rmtree(config.storage, ignore_errors=True)
        return Storage(config.storage)
    storage = Storage(config.storage)
    if storage.list(""):
        raise ConfigError(f"demo: storage {storage.uri()} is not empty; the demo starts from nothing, "
                          "so give it an empty location (or drop --storage to use <workdir>/store)")
    return storage


# -- waiting on the monitor ----------------------------------------------------------------
def _status(monitor: Any) -> MonitorStatus:
    import ray

    return ray.get(monitor.status.remote(), timeout=30)


def _wait(predicate: Callable[[], Any], timeout_s: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise MonitorError(f"demo: timed out after {timeout_s:.0f}s waiting for {what}")


# -- the run -------------------------------------------------------------------------------
@dataclass
class DemoRun:
    """What the phases of one demo run share: the loop's handles, the pools and the traffic."""

    config: Config
    opts: DemoOptions
    storage: Storage
    monitor: Any
    url: str
    pools: dict[str, Path]
    log: Timeline
    first: Any  # the first TrainOutcome
    traffic: dict[str, Any] = field(default_factory=dict)  # calm, storm, recovered: ray_mlops.traffic.Traffic
    onset_window: int = 0
    promoted: str | None = None  # the retrained version, once it is production
    shadow_trial: ShadowTrial | None = None  # the shadow stage's closed trial (with its online paired test), if one ran

    def status(self) -> MonitorStatus:
        return _status(self.monitor)


def run_demo(config: Config, opts: DemoOptions, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole loop once; returns the summary figures (also printed, and in ``summary.json``)."""
    import ray

    from ray_mlops import loop
    from ray_mlops.data.ingest import ingest
    from ray_mlops.pipeline import train_and_promote
    from ray_mlops.runtime import connect
    from ray_mlops.serve import deploy

    log = Timeline(echo)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    config = demo_config(config, opts)
    data_root = Path(config.data.root)
    if (data_root / ".landed").exists():  # a previous demo added drifted data: start over
        shutil.rmtree(data_root)
    storage = _fresh_storage(config, opts)
    pools = _generate(opts, data_root, log)

    connect(config)
    log("ray", f"embedded local Ray, {int(ray.cluster_resources().get('CPU', 0))} CPUs")
    try:
        result = ingest(config, storage)
        log("ingest", f"{result.rows} rows x {len(result.schema.features)} features from {len(config.data.sources)} sources")
        first = train_and_promote(config, storage)
        log("train", f"{first.version}: {first.search.family}, {len(first.search.trials)} trials, "
                     f"roc_auc {first.search.metrics['roc_auc']:.4f}, "
                     f"{'promoted' if first.decision.promoted else 'NOT promoted'}")
        url = deploy.deploy(config)
        log("serve", f"{deploy.status(config).get('version')} at {url}")
        monitor = loop.start_monitor(config)
        log("monitor", f"windows of {opts.window} records, alpha {config.monitor.alpha}, "
                       f"patience {config.monitor.patience}")
        return _traffic_phases(DemoRun(config, opts, storage, monitor, url, pools, log, first))
    finally:
        loop.shutdown(config)  # the app drains (replicas flush their logs) and the monitor checkpoints
        ray.shutdown()  # the embedded Ray goes, Serve's controller and proxy with it


def _traffic_phases(run: DemoRun) -> dict[str, Any]:
    """No drift → drift (v1 serves) → retraining → the promoted version serves the drifted records again."""
    _calm_phase(run)
    try:
        run.promoted, run.shadow_trial = _await_decision(run, _drift_phase(run))
        if run.promoted:
            _promotion_phase(run, run.promoted)
    finally:
        for traffic in run.traffic.values():
            traffic.stop()
    return _finish(run)


def _calm_phase(run: DemoRun) -> None:
    """One pass of the no-drift records; the monitor tests its windows against v1's reference."""
    from ray_mlops.traffic import Traffic, raw_records

    opts, monitor = run.opts, run.monitor
    records, labels = raw_records(run.pools["traffic"])
    baseline_rows = opts.baseline_windows * opts.window
    run.log("traffic", f"no drift: {baseline_rows} records at {opts.rate:.0f}/s, labels sent back to /feedback")
    run.traffic["calm"] = Traffic(run.url, rate=opts.rate).start(records, labels, repeat=True, limit=baseline_rows)
    run.traffic["calm"].wait(opts.timeout_s)
    _wait(lambda: _status(monitor).windows >= opts.baseline_windows, 120, "the no-drift windows")
    before = run.status()
    run.onset_window = before.windows
    run.log("no-drift windows", f"{before.windows} tested, alarms {before.alarms}, "
                                f"retrainings {len(before.retrain_history)}, min p "
                                f"{min(v.p_value for v in before.last_verdicts):.3g}")


def _drift_phase(run: DemoRun) -> RetrainOutcome:
    """New labeled data lands, the traffic drifts (cycled); waits for the alarm and the retraining's outcome."""
    from ray_mlops.traffic import Traffic, land_batch, raw_records

    opts, root = run.opts, Path(run.config.data.root)
    added = land_batch(run.pools["new_batch"], root, tag="batch-2")
    (root / ".landed").write_text("batch-2")
    run.log("drift begins", f"traffic drifts ({opts.drift}, intensity {opts.intensity}); "
                            f"{added} new labeled machines land in {root}")
    drifted, drifted_labels = raw_records(run.pools["drift_traffic"])
    run.traffic["storm"] = Traffic(run.url, rate=opts.rate).start(drifted, drifted_labels, repeat=True)
    alarm = _wait(lambda: _alarm(run.status(), run.onset_window), opts.timeout_s / 2, "drift to be confirmed")
    run.log("drift confirmed", f"window {alarm.index} ({alarm.index - run.onset_window + 1} windows after "
                               f"onset), p={alarm.p_value:.3g}, top: {', '.join(list(alarm.top_features)[:3])}")
    run.log("retraining", "launched: re-ingest, Tune search, paired gate on post-drift labeled predictions")
    outcome = _wait(lambda: run.status().retrain_history, opts.timeout_s, "the retraining")[-1]
    run.log("retrained", _outcome_line(outcome))
    return outcome


SHADOW_CLOSED = ("promoted", "discarded", "superseded", "failed")


def _await_decision(run: DemoRun, outcome: RetrainOutcome) -> tuple[str | None, ShadowTrial | None]:
    """(the promoted version or None, the shadow trial or None) once the loop decided on the candidate.

    A retraining that put its candidate in shadow (status ``shadowing``) is decided by the
    monitor's online paired gate on live labeled rows; its closed trial is in the status.
    """
    if outcome.status == "promoted":
        return outcome.version, None
    if outcome.status != "shadowing":
        return None, None
    version = outcome.version
    run.log("shadow", f"{version} predicts beside {run.first.version} on the same requests; "
                      "online paired gate on the /feedback labels")
    trial = _wait(lambda: closed_trial(run.status(), version), run.opts.timeout_s, "the shadow's online gate")
    run.log("shadow decided", f"{trial.status}: {_gate_test_line(trial.test)}")
    return (version if trial.status == "promoted" else None), trial


def closed_trial(status: MonitorStatus, candidate: str) -> ShadowTrial | None:
    """The shadow stage's ended trial of ``candidate`` in a monitor status, if there is one."""
    for trial in reversed(status.shadow_history):
        if trial.candidate == candidate and trial.status in SHADOW_CLOSED:
            return trial
    return None


def _promotion_phase(run: DemoRun, version: str) -> None:
    """After the swap the drifted records are sent once more, all answered by ``version``."""
    from ray_mlops.traffic import Traffic, raw_records

    opts, storm = run.opts, run.traffic["storm"]
    _wait(lambda: storm.snapshot()["versions"].get(version), 120, f"responses from {version}")
    storm.stop()
    run.log("hot swap", f"serving {version}; failed requests so far: {storm.snapshot()['failed']}")
    drifted, drifted_labels = raw_records(run.pools["drift_traffic"])
    switched = run.status().windows
    rows = max(len(drifted), opts.after_windows * opts.window)
    run.traffic["recovered"] = Traffic(run.url, rate=opts.rate).start(drifted, drifted_labels, repeat=True, limit=rows)
    run.traffic["recovered"].wait(opts.timeout_s)
    _wait(lambda: _own_windows(run.status(), version) >= opts.after_windows, 180, "windows of the new version")
    after = run.status()
    run.log("after the swap", f"{after.windows - switched} windows vs {version}'s reference, "
                              f"last p={after.last_verdicts[-1].p_value:.3g}")


def _alarm(status: MonitorStatus, since: int) -> VerdictSummary | None:
    alarms = [v for v in status.last_verdicts if v.alarm and v.index >= since]
    return alarms[-1] if alarms else None


def _own_windows(status: MonitorStatus, version: str) -> int:
    return sum(1 for v in status.last_verdicts if v.reference_version == version)


def _outcome_line(outcome: RetrainOutcome) -> str:
    from ray_mlops.monitor.retraining import GateSummary

    gate = outcome.gate or GateSummary()
    if outcome.status == "failed":
        return f"FAILED at {outcome.stage}: {outcome.error}"
    return (f"{outcome.version} {outcome.status} in {outcome.seconds}s; gate on "
            f"{outcome.holdout_rows} post-drift rows: candidate {gate.metric}="
            f"{_num(gate.candidate_score)} vs production {_num(gate.production_score)}")


def _gate_test_line(test: dict | None) -> str | None:
    """The recorded paired test of the retraining's gate, on one line."""
    if not test:
        return None
    return (f"{test['test']} {test['require']}: Δ={_num(test['estimate'])} [{_num(test['low'])}, {_num(test['high'])}] "
            f"p={test['p_value']:.3g} on {test['rows']} rows, {'passed' if test['passed'] else 'failed'}")


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


# -- the figures ---------------------------------------------------------------------------
@dataclass(frozen=True)
class LiveFigures:
    """Live accuracy before drift, after drift (v1) and after promotion (v2), and the paired comparison.

    ``after_drift`` is v1 on the first pass over the drifted records and ``after_promotion``
    the promoted version on its pass over the same records, so ``shadow`` pairs the two
    versions' answers record by record (one-sided exact McNemar, candidate better).
    """

    before_drift: LiveAccuracy
    after_drift: LiveAccuracy
    after_promotion: LiveAccuracy
    shadow: LiveComparison
    shadow_source: str

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` document: ``live_accuracy`` and ``shadow``."""
        return {"live_accuracy": {"before_drift": self.before_drift.to_json(),
                                  "after_drift": self.after_drift.to_json(),
                                  "after_promotion": self.after_promotion.to_json()},
                "shadow": self.shadow.to_json()}


def live_figures(calm: list[Answer], storm: list[Answer], recovered: list[Answer], production: str,
                 candidate: str | None, shadow: dict | None = None) -> LiveFigures:
    """The demo's live figures from the answers of its three traffic phases (see :class:`LiveFigures`)."""
    v1_drifted = select(storm, version=production, pass_index=0)
    v2_drifted = select(recovered, version=candidate, pass_index=0) if candidate else []
    comparison, source = shadow_comparison(shadow, v1_drifted, v2_drifted)
    return LiveFigures(accuracy(select(calm, version=production)), accuracy(v1_drifted), accuracy(v2_drifted),
                       comparison, source)


def shadow_comparison(shadow: dict | None, production: list[Answer],
                      candidate: list[Answer]) -> tuple[LiveComparison, str]:
    """The shadow comparison: the monitor's online shadow stage's, when the retraining recorded one.

    HOOK for the shadow stage (issue 14 item 2): ``shadow`` is its closed trial, whose ``test``
    (``PairedTest.to_json()`` of the online gate on accuracy: exact McNemar) compared both
    models on the same labeled live rows in the serving replicas; or a dict with ``rows``,
    ``production_accuracy``, ``candidate_accuracy`` and ``p_value`` directly. Without one, the
    two versions' live answers on the same drifted records are paired (v1 before, v2 after the swap).
    """
    test = (shadow or {}).get("test") or {}
    if test.get("rows") and test.get("metric") == "accuracy":
        return (LiveComparison(int(test["rows"]), test.get("production_score"), test.get("candidate_score"),
                               test.get("p_value")), f"online shadow stage, {test.get('test')}")
    if shadow and all(shadow.get(k) is not None for k in ("rows", "production_accuracy", "candidate_accuracy")):
        return (LiveComparison(int(shadow["rows"]), float(shadow["production_accuracy"]),
                               float(shadow["candidate_accuracy"]), shadow.get("p_value")), "online shadow stage")
    return paired(production, candidate), "same drifted records, v1 before and v2 after the swap"


def _live(run: DemoRun) -> LiveFigures:
    answers = {name: run.traffic[name].answers() if name in run.traffic else [] for name in
               ("calm", "storm", "recovered")}
    return live_figures(answers["calm"], answers["storm"], answers["recovered"], run.first.version, run.promoted,
                        None if run.shadow_trial is None else run.shadow_trial.to_dict())


def _live_lines(figures: LiveFigures, production: str, candidate: str | None) -> dict[str, Any]:
    s = figures.shadow
    shadow = "-" if not s.rows else (f"{production} {s.production_accuracy:.4f} vs {candidate} "
                                     f"{s.candidate_accuracy:.4f} on the same {s.rows} labeled rows, "
                                     f"McNemar p={s.p_value:.3g} ({figures.shadow_source})")
    return {f"live accuracy before drift ({production})": figures.before_drift.describe(),
            f"live accuracy after drift ({production})": figures.after_drift.describe(),
            f"live accuracy after promotion ({candidate or '-'})": figures.after_promotion.describe(),
            "shadow comparison": shadow}


def _summary(run: DemoRun, verdicts: list[dict], outcome: RetrainOutcome | None,
             figures: LiveFigures) -> dict[str, Any]:
    from ray_mlops.monitor.retraining import GateSummary, RetrainOutcome

    history = run.status().retrain_history
    outcome = outcome or RetrainOutcome("-", "none")
    gate = outcome.gate or GateSummary()
    baseline = [v for v in verdicts if v["index"] < run.onset_window]
    alarm = next((v for v in verdicts if v["alarm"] and v["index"] >= run.onset_window), None)
    stats = {name: traffic.snapshot() for name, traffic in run.traffic.items()}
    promoted = run.promoted
    return {
        "title": "ray_mlops demo: drift hurts v1, retrained, gated by a paired test, promoted, recovers",
        "total seconds": round(time.monotonic() - run.log.started, 1),
        "windows tested": len(verdicts),
        "no-drift windows": len(baseline),
        "no-drift alarms": sum(v["alarm"] for v in baseline),
        "retrainings during no-drift": sum(1 for r in history if r.trigger_window is not None
                                           and r.trigger_window < run.onset_window),
        "drift flagged (windows after onset)": None if alarm is None else alarm["index"] - run.onset_window + 1,
        "retraining": outcome.status if run.shadow_trial is None
        else f"{outcome.status} -> {run.shadow_trial.status}",
        "retraining seconds": outcome.seconds,
        "versions": f"{run.first.version} -> {promoted or run.first.version}",
        "gate metric": gate.metric,
        "old version on post-drift holdout": gate.production_score,
        "new version on post-drift holdout": gate.candidate_score,
        "post-drift holdout rows": outcome.holdout_rows,
        "gate test": _gate_test_line(gate.test),
        **_live_lines(figures, run.first.version, promoted),
        "requests": sum(s["requests"] for s in stats.values()),
        "failed requests": sum(s["failed"] for s in stats.values()),
        "feedback labels sent": sum(s["feedback"] for s in stats.values()),
        "p50 / p99 latency ms (drift phase)": f"{stats['storm']['p50_ms']} / {stats['storm']['p99_ms']}"
        if "storm" in stats else "-",
    }


def _finish(run: DemoRun) -> dict[str, Any]:
    from ray_mlops.monitor.report import render_report
    from ray_mlops.monitor.store import MonitorStore

    status = run.status()
    verdicts = MonitorStore(run.storage).verdicts()
    outcome = status.retrain_history[-1] if status.retrain_history else None
    figures = _live(run)
    summary = _summary(run, verdicts, outcome, figures)
    (run.opts.workdir / "summary.json").write_text(json.dumps(figures.to_json(), indent=2) + "\n", encoding="utf-8")
    every = [a for traffic in run.traffic.values() for a in traffic.answers()]
    live = series(every, bucket_rows=max(20, run.opts.window // 2), since=min((a.time for a in every), default=0.0))
    report = run.opts.workdir / "report.html"
    report.write_text(render_report(verdicts, run.log.rows, summary, run.config.monitor.alpha, status=status,
                                    live=live), encoding="utf-8")
    run.log("report", f"{report.resolve()} (figures in {(run.opts.workdir / 'summary.json').resolve()})")
    return summary


__all__ = ["DemoOptions", "DemoRun", "LiveFigures", "closed_trial", "demo_config", "live_figures", "run_demo",
           "shadow_comparison"]
