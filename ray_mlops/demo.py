"""``ray-mlops demo``: the whole loop, from nothing, on the embedded local Ray.

generate → ingest → train (gate, promote) → serve → monitor → traffic without drift →
drift begins (the traffic drifts and a new labeled batch lands in the data root) →
drift confirmed → retraining (re-ingest, search, gate on post-drift data) → promotion →
hot swap under traffic → the monitor follows the new reference. Prints a timeline and
the figures the loop is judged by, and writes an HTML report.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ray_mlops.config import Config
from ray_mlops.errors import ConfigError, MonitorError
from ray_mlops.storage import Storage

if TYPE_CHECKING:
    from ray_mlops.monitor.state import MonitorStatus


@dataclass
class DemoOptions:
    """Sizes and pacing of the demo (the defaults fit 2 cores and ~4 minutes)."""

    workdir: Path = Path("demo")
    storage: str | None = None    # a storage URI (e.g. s3://bucket/demo); default <workdir>/store
    entities: int = 1500          # the initial labeled dataset
    traffic_entities: int = 800   # machines sent without drift
    drift_entities: int = 800     # machines sent once drift begins (cycled)
    new_entities: int = 1500      # the labeled batch that lands when drift begins
    drift: str = "covariate"
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
def run_demo(config: Config, opts: DemoOptions, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole loop once; returns the summary figures (also printed)."""
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
        return _traffic_phases(config, opts, storage, monitor, url, pools, log, first)
    finally:
        loop.shutdown(config)  # the app drains (replicas flush their logs) and the monitor checkpoints
        ray.shutdown()  # the embedded Ray goes, Serve's controller and proxy with it


def _traffic_phases(config, opts, storage, monitor, url, pools, log, first) -> dict[str, Any]:
    from ray_mlops.traffic import Traffic, land_batch, raw_records

    records, labels = raw_records(pools["traffic"])
    drifted, drifted_labels = raw_records(pools["drift_traffic"])
    baseline_rows = opts.baseline_windows * opts.window
    log("traffic", f"no drift: {baseline_rows} records at {opts.rate:.0f}/s, labels sent back to /feedback")
    calm = Traffic(url, rate=opts.rate).start(records, labels, repeat=True, limit=baseline_rows)
    calm.wait(opts.timeout_s)
    _wait(lambda: _status(monitor).windows >= opts.baseline_windows, 120, "the no-drift windows")
    before = _status(monitor)
    log("no-drift windows", f"{before.windows} tested, alarms {before.alarms}, "
                            f"retrainings {len(before.retrain_history)}, min p "
                            f"{min(v['p_value'] for v in before.last_verdicts):.3g}")

    onset_window = before.windows
    added = land_batch(pools["new_batch"], Path(config.data.root), tag="batch-2")
    (Path(config.data.root) / ".landed").write_text("batch-2")
    log("drift begins", f"traffic drifts ({opts.drift}, intensity {opts.intensity}); "
                        f"{added} new labeled machines land in {config.data.root}")
    storm = Traffic(url, rate=opts.rate).start(drifted, drifted_labels, repeat=True)
    try:
        alarm = _wait(lambda: _alarm(_status(monitor), onset_window), opts.timeout_s / 2, "drift to be confirmed")
        delay = alarm["index"] - onset_window + 1
        log("drift confirmed", f"window {alarm['index']} ({delay} windows after onset), p={alarm['p_value']:.3g}, "
                               f"top: {', '.join(list(alarm['top_features'])[:3])}")
        log("retraining", "launched: re-ingest, Tune search, gate on post-drift labeled predictions")
        outcome = _wait(lambda: _status(monitor).retrain_history, opts.timeout_s, "the retraining")[-1]
        log("retrained", _outcome_line(outcome))
        new_version = outcome.get("version") if outcome.get("status") == "promoted" else None
        if new_version:
            _wait(lambda: storm.snapshot()["versions"].get(new_version), 120, f"responses from {new_version}")
            log("hot swap", f"serving {new_version}; failed requests so far: {storm.snapshot()['failed']}")
            switched = _status(monitor).windows
            _wait(lambda: _own_windows(_status(monitor), new_version) >= opts.after_windows, 180,
                  "windows of the new version")
            after = _status(monitor)
            log("after the swap", f"{after.windows - switched} windows vs {new_version}'s reference, "
                                  f"last p={after.last_verdicts[-1]['p_value']:.3g}")
    finally:
        storm.stop()
    return _finish(config, opts, storage, monitor, log, first, calm, storm, onset_window)


def _alarm(status: MonitorStatus, since: int) -> dict | None:
    alarms = [v for v in status.last_verdicts if v["alarm"] and v["index"] >= since]
    return alarms[-1] if alarms else None


def _own_windows(status: MonitorStatus, version: str) -> int:
    return sum(1 for v in status.last_verdicts if v["reference_version"] == version)


def _outcome_line(outcome: dict) -> str:
    gate = outcome.get("gate") or {}
    if outcome.get("status") == "failed":
        return f"FAILED at {outcome.get('stage')}: {outcome.get('error')}"
    return (f"{outcome.get('version')} {outcome.get('status')} in {outcome.get('seconds')}s; gate on "
            f"{outcome.get('holdout_rows')} post-drift rows: candidate {gate.get('metric')}="
            f"{_num(gate.get('candidate_score'))} vs production {_num(gate.get('production_score'))}")


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _finish(config, opts, storage, monitor, log, first, calm, storm, onset_window) -> dict[str, Any]:
    from ray_mlops.monitor.report import render_report
    from ray_mlops.monitor.store import MonitorStore

    status = _status(monitor)
    verdicts = MonitorStore(storage).verdicts()
    history = status.retrain_history
    outcome = history[-1] if history else {}
    gate = outcome.get("gate") or {}
    baseline = [v for v in verdicts if v["index"] < onset_window]
    alarm = next((v for v in verdicts if v["alarm"] and v["index"] >= onset_window), None)
    storm_stats, calm_stats = storm.snapshot(), calm.snapshot()
    summary = {
        "title": "ray_mlops demo: drift detected, retrained, gated, promoted, served",
        "total seconds": round(time.monotonic() - log.started, 1),
        "windows tested": len(verdicts),
        "no-drift windows": len(baseline),
        "no-drift alarms": sum(v["alarm"] for v in baseline),
        "retrainings during no-drift": sum(1 for r in history if r.get("trigger_window", 1e9) < onset_window),
        "drift flagged (windows after onset)": None if alarm is None else alarm["index"] - onset_window + 1,
        "retraining": outcome.get("status"),
        "retraining seconds": outcome.get("seconds"),
        "versions": f"{first.version} -> {outcome.get('version') if outcome.get('status') == 'promoted' else first.version}",
        "gate metric": gate.get("metric"),
        "old version on post-drift holdout": gate.get("production_score"),
        "new version on post-drift holdout": gate.get("candidate_score"),
        "post-drift holdout rows": outcome.get("holdout_rows"),
        "drifted-traffic accuracy by version": storm_stats["accuracy_by_version"],
        "requests": calm_stats["requests"] + storm_stats["requests"],
        "failed requests": calm_stats["failed"] + storm_stats["failed"],
        "feedback labels sent": calm_stats["feedback"] + storm_stats["feedback"],
        "p50 / p99 latency ms (drift phase)": f"{storm_stats['p50_ms']} / {storm_stats['p99_ms']}",
    }
    report = opts.workdir / "report.html"
    report.write_text(render_report(verdicts, log.rows, summary, config.monitor.alpha, status=status), encoding="utf-8")
    log("report", str(report.resolve()))
    return summary


__all__ = ["DemoOptions", "run_demo", "demo_config"]
