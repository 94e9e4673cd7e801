"""The ``ray-mlops`` command: the composition root that wires the stages together.

Every command takes ``--config`` and ``--address`` (no address: an embedded local Ray;
``auto``: join the running cluster). Errors from the package's exception tree are printed
as one line on stderr with a non-zero exit code; nothing else is caught.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
import yaml

from ray_mlops.config import Config, effective_config, load_config
from ray_mlops.errors import RayMlopsError
from ray_mlops.storage import Storage

if TYPE_CHECKING:  # the status types, for annotations only (the CLI imports stages lazily)
    from ray_mlops.loop import LoopStatus
    from ray_mlops.monitor.state import MonitorStatus


class Context:
    """What every command needs: the loaded config, the Ray address, the storage."""

    def __init__(self, config_path: str | None, address: str | None, storage: str | None):
        overrides: dict[str, Any] = {}
        if address:
            overrides["ray.address"] = address
        if storage:
            overrides["storage"] = storage
        self.config: Config = load_config(config_path, overrides)
        self.address = self.config.ray.address
        self.storage_override = storage

    @functools.cached_property
    def storage(self) -> Storage:
        return Storage(self.config.storage)

    def connect(self) -> None:
        from ray_mlops.runtime import connect, ensure_shared_storage

        connect(self.config, self.address)
        ensure_shared_storage(self.config.storage)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"ray-mlops: error: {message}", err=True)
    sys.exit(code)


def _handles_errors(command: Callable) -> Callable:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RayMlopsError as exc:
            fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


def _context(ctx: click.Context) -> Context:
    if ctx.obj is None:
        params = ctx.find_root().params
        ctx.obj = Context(params.get("config"), params.get("address"), params.get("storage"))
    return ctx.obj


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(dir_okay=False), help="YAML config (default: built-in, = configs/default.yaml).")
@click.option("--address", help="Ray address: omit for an embedded local Ray, 'auto' to join a running cluster.")
@click.option("--storage", envvar="RAY_MLOPS_STORAGE", show_envvar=True,
              help="Override the storage URI (a folder, s3://bucket/prefix, ...).")
@click.version_option(package_name="ray-mlops")
@click.pass_context
def cli(ctx: click.Context, config: str | None, address: str | None, storage: str | None) -> None:
    """ray-mlops: a closed MLOps loop on Ray (ingest → train → registry → serve → monitor)."""
    from ray_mlops.progress import hide_progress, show_progress

    handler = show_progress()  # stderr: a live line on a terminal, timestamped lines otherwise
    ctx.call_on_close(lambda: hide_progress(handler))


def command(name: str | None = None, **kwargs: Any) -> Callable:
    """Register a CLI command whose package errors become one line on stderr."""

    def decorate(fn: Callable) -> Callable:
        return cli.command(name, **kwargs)(_handles_errors(fn))

    return decorate


def echo_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True, default=str))


# -- config -------------------------------------------------------------------------
@command("config")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of YAML.")
@click.pass_context
def config_command(ctx: click.Context, as_json: bool) -> None:
    """Print the effective config: the file (or the built-in defaults) with every omitted section filled in."""
    document = effective_config(_context(ctx).config)
    if as_json:
        echo_json(document)
    else:
        click.echo(yaml.safe_dump(document, sort_keys=False).rstrip())


# -- data ---------------------------------------------------------------------------
@command()
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: data.root of the config).")
@click.option("--entities", type=click.IntRange(min=1), default=2000, show_default=True, help="How many machines.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--drift", type=click.Choice(["none", "covariate", "prior", "concept"]), default="none", show_default=True)
@click.option("--intensity", type=click.FloatRange(0, 5), default=1.0, show_default=True, help="Strength of the drift.")
@click.option("--start-id", type=click.IntRange(min=0), default=0, show_default=True, help="First machine number (fresh ids for new batches).")
@click.option("--modalities", default="table,events,text,image,timeseries", show_default=True,
              help="Comma-separated sources to write (the labels always are); the config written beside the data lists only these.")
@click.pass_context
def generate(ctx: click.Context, out: str | None, entities: int, seed: int, drift: str, intensity: float, start_id: int,
             modalities: str) -> None:
    """Write the sample multi-format predictive-maintenance dataset, and a config for it (<out>/ray_mlops.yaml)."""
    from ray_mlops.data.generate import GenerateSpec, generate as write_dataset, parse_modalities, sample_config

    context = _context(ctx)
    target = Path(out or context.config.data.root).resolve()
    chosen = parse_modalities(modalities)
    spec = GenerateSpec(entities=entities, seed=seed, drift=drift, intensity=intensity, start_id=start_id,  # type: ignore[arg-type]
                        modalities=chosen)
    counts = write_dataset(target, spec)
    config_path = target / "ray_mlops.yaml"
    base = ctx.find_root().params.get("config")
    document = sample_config(yaml.safe_load(Path(base).read_text(encoding="utf-8")) or {} if base else {}, target, chosen)
    config_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    click.echo(f"wrote sample dataset to {target}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
    click.echo(f"config for it: {config_path} (ray-mlops --config {config_path} ingest)")


@command()
@click.pass_context
def ingest(ctx: click.Context) -> None:
    """Build the feature table, reference profile and fingerprint from the configured sources."""
    from ray_mlops.data.ingest import ingest as run_ingest

    context = _context(ctx)
    context.connect()
    result = run_ingest(context.config, context.storage)
    click.echo(f"feature table: {result.rows} rows, {len(result.schema.features)} features")
    click.echo(f"fingerprint:   {result.fingerprint}")
    click.echo(f"location:      {context.storage.uri(result.folder)}")
    for name, counts in result.counts.items():
        reasons = "; ".join(f"{reason}: {n}" for reason, n in counts["reasons"].items())
        click.echo(
            f"  {name:<12} read {counts['read']:>9}  accepted {counts['accepted']:>9}  "
            f"quarantined {counts['quarantined']:>6}" + (f"  ({reasons})" if reasons else "")
        )


@command()
@click.option("--name", help="Tune experiment name (default: derived from data + config, so a rerun resumes).")
@click.option("--fresh", is_flag=True, help="Start a new search instead of resuming an interrupted one.")
@click.pass_context
def train(ctx: click.Context, name: str | None, fresh: bool) -> None:
    """Tune search on the feature table; register the best model; promote it if it passes the gate."""
    from ray_mlops.pipeline import train_and_promote

    context = _context(ctx)
    context.connect()
    outcome = train_and_promote(context.config, context.storage, name=name, resume=not fresh)
    search, decision = outcome.search, outcome.decision
    click.echo(f"search:     {len(search.trials)} trials, best {search.family} {search.params}")
    click.echo("metrics:    " + ", ".join(f"{k}={v:.4f}" for k, v in search.metrics.items()))
    click.echo(f"registered: {context.config.model_name} {outcome.version} (data {outcome.ingest.fingerprint[:12]})")
    verdict = "PROMOTED to production" if decision.promoted else "not promoted"
    click.echo(f"gate:       {verdict}: {decision.reason}")


# -- registry -----------------------------------------------------------------------
def _registry(ctx: click.Context):
    from ray_mlops.registry import Registry

    context = _context(ctx)
    return Registry(context.storage, context.config.model_name)


@cli.group()
def registry() -> None:
    """Model versions, aliases, promotion and rollback."""


def registry_command(name: str | None = None, **kwargs: Any) -> Callable:
    def decorate(fn: Callable) -> Callable:
        return registry.command(name, **kwargs)(_handles_errors(fn))

    return decorate


@registry_command("list")
@click.pass_context
def registry_list(ctx: click.Context) -> None:
    """List versions with their metrics and aliases."""
    reg = _registry(ctx)
    aliases = reg.aliases()
    versions = reg.versions()
    if not versions:
        click.echo("no model versions registered yet: run `ray-mlops train`")
        return
    click.echo(f"{'version':<8} {'created':<20} {'family':<24} {'metric':>10}  aliases")
    for meta in versions:
        version = meta["version"]
        tags = ",".join(name for name, target in aliases.items() if target == version)
        metric = meta.get("metrics", {}).get(_context(ctx).config.gate.metric)
        family = meta.get("params", {}).get("family", "")
        shown = f"{metric:.4f}" if isinstance(metric, (int, float)) else "-"
        click.echo(f"{version:<8} {str(meta.get('created', ''))[:19]:<20} {family:<24} {shown:>10}  {tags}")


@registry_command("show")
@click.argument("version")
@click.pass_context
def registry_show(ctx: click.Context, version: str) -> None:
    """Show a version's (or alias's) metadata, lineage and gate decisions (each with its paired test)."""
    reg = _registry(ctx)
    meta = reg.metadata(version)
    decisions = [e for e in reg.events("gate") if e.get("candidate_version") == meta["version"]]
    echo_json({**meta, "gate_decisions": decisions})


@registry_command("promote")
@click.argument("version")
@click.option("--reason", default="manual promotion", show_default=True)
@click.pass_context
def registry_promote(ctx: click.Context, version: str, reason: str) -> None:
    """Make VERSION the production model (no gate: an operator's decision)."""
    promoted = _registry(ctx).promote(version, reason=reason)
    click.echo(f"production -> {promoted}")


@registry_command("rollback")
@click.option("--reason", default="manual rollback", show_default=True)
@click.pass_context
def registry_rollback(ctx: click.Context, reason: str) -> None:
    """Return production to the previous production version."""
    click.echo(f"production -> {_registry(ctx).rollback(reason=reason)}")


@registry_command("events")
@click.option("--kind", help="Only events of this kind.")
@click.pass_context
def registry_events(ctx: click.Context, kind: str | None) -> None:
    """Print the append-only event log (registrations, gate decisions, promotions...)."""
    for event in _registry(ctx).events(kind):
        click.echo(json.dumps(event, sort_keys=True, default=str))


# -- serving ------------------------------------------------------------------------
@command("serve")
@click.option("--version", "version", default="production", show_default=True, help="Version or alias to serve.")
@click.option("--host", help="Bind address (default: serve.host of the config, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="HTTP port (default: serve.port of the config).")
@click.option("--export", "export", type=click.Path(dir_okay=False), help="Write a Serve config file for `serve deploy` and exit.")
@click.pass_context
def serve_command(ctx: click.Context, version: str, host: str | None, port: int | None, export: str | None) -> None:
    """Deploy the production model behind HTTP; print the URL.

    With the embedded local Ray (no --address) it stays in the foreground until Ctrl-C,
    like `serve run`; with --address it deploys to the cluster and returns.
    """
    from ray_mlops.serve import deploy as serving

    context = _context(ctx)
    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    config = context.config.model_copy(update={"serve": context.config.serve.model_copy(update=updates)})
    if export:
        click.echo(f"wrote Serve config to {serving.write_serve_config(config, export, version)} (keep it private: it holds the request-id secret)")
        return
    context.connect()
    url = serving.deploy(config, version)
    click.echo(f"serving {serving.status(config).get('version')} of {config.model_name} at {url}  (OpenAPI: {url}/openapi.json)")
    if context.address:
        return
    from ray_mlops import loop

    loop.start_monitor(config)  # one process holds the embedded Ray: the monitor runs alongside
    click.echo("embedded Ray: serving (and monitoring drift) until Ctrl-C")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        loop.shutdown(config)
        click.echo("stopped")


@command("shutdown")
@click.pass_context
def shutdown_command(ctx: click.Context) -> None:
    """Remove the serving application and the drift monitor."""
    context = _context(ctx)
    context.connect()
    from ray_mlops import loop

    done = loop.shutdown(context.config)
    click.echo(f"application {context.config.serve.app_name}: {'removed' if done['app_removed'] else 'not running'}; "
               f"monitor: {'stopped' if done['monitor_stopped'] else 'not running'}")


# -- the closed loop ----------------------------------------------------------------
@command("monitor")
@click.pass_context
def monitor_command(ctx: click.Context) -> None:
    """Start (idempotently) the detached drift monitor.

    With the embedded local Ray it stays in the foreground until Ctrl-C; with --address
    it starts the monitor on the cluster and returns.
    """
    from ray_mlops import loop
    from ray_mlops.contracts import MONITOR_ACTOR

    context = _context(ctx)
    context.connect()
    loop.start_monitor(context.config)
    cfg = context.config.monitor
    click.echo(f"monitor {MONITOR_ACTOR} running (namespace {context.config.ray.namespace}): windows of "
               f"{cfg.window_size} records, alpha {cfg.alpha}, patience {cfg.patience}, retraining "
               f"{'on' if cfg.retrain.enabled else 'off'}")
    if context.address:
        return
    click.echo("embedded Ray: monitoring until Ctrl-C")
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        from ray_mlops.monitor.actor import stop_monitor

        stop_monitor(context.config)
        click.echo("stopped")


def _print_status(report: LoopStatus) -> None:
    serving, monitor, aliases = report.serving, report.monitor, report.registry.aliases
    click.echo(f"model:      {report.model} (storage {report.storage})")
    click.echo(f"registry:   production={aliases.get('production')} candidate={aliases.get('candidate')}")
    click.echo(f"serving:    {serving.get('status')} version={serving.get('version')} replicas={serving.get('replicas')}"
               + (f" at {serving['url']}" if serving.get("url") else ""))
    _print_monitor(monitor)
    _print_probation(monitor)
    for e in report.registry.promotions[-3:]:
        click.echo(f"{e['kind']:<11} {e.get('version')} (was {e.get('previous')}) {str(e.get('time'))[:19]}: {e.get('reason')}")


def _print_monitor(monitor: MonitorStatus) -> None:
    reference = (monitor.reference or {}).get("version")
    open_rows = "-" if monitor.open_window_rows is None else monitor.open_window_rows
    click.echo(f"monitor:    {'running' if monitor.running else 'not running'}; windows={monitor.windows} "
               f"records={monitor.records} open={open_rows} reference={reference}")
    for v in monitor.last_verdicts[-5:]:
        parts = " ".join(f"{k}={p:.3g}" for k, p in v.detectors.items() if p is not None)
        click.echo(f"  window {v.index:>4} {str(v.end)[11:19]} rows={v.rows:<4} "
                   f"{'DRIFT' if v.drift else 'ok   '}{' ALARM' if v.alarm else ''} p={v.p_value:.3g} ({parts})")
    active = monitor.retrain_active
    if active:
        click.echo(f"retraining: {active.id} running (drift onset {active.onset})")
    for r in monitor.retrain_history[-5:]:
        gate = r.gate
        reason = gate.reason if gate is not None else None
        click.echo(f"retrained:  {r.id} {r.status} {r.version or ''} {reason or r.error or ''}")
        if gate is not None and gate.test:
            click.echo(f"  gate test: {_test_line(gate.test)}")


def _test_line(test: dict) -> str:
    """A recorded paired test (PairedTest.to_json) on one line."""
    def num(key: str) -> str:
        value = test.get(key)
        return f"{value:+.4f}" if isinstance(value, (int, float)) else "-"

    p = test.get("p_value")
    return (f"{test.get('test')} Δ{test.get('metric')}={num('estimate')} [{num('low')}, {num('high')}] "
            f"p={p if p is None else format(p, '.3g')} rows={test.get('rows')} ({test.get('require')}, "
            f"α={test.get('alpha')}, {'passed' if test.get('passed') else 'failed'})")


def _print_probation(monitor: MonitorStatus) -> None:
    from ray_mlops.monitor.probation import ProbationTrigger

    probation = monitor.probation
    if probation:
        click.echo(f"probation:  {probation.version} (rolls back to {probation.previous}) "
                   f"{probation.status}; windows {probation.seen}/{probation.windows}, "
                   f"{probation.tested} with labels, rollback at p <= {probation.level:.3g}")
    if monitor.rollback_count or monitor.rollbacks:
        click.echo(f"rollbacks:  {monitor.rollback_count} automatic ({monitor.consecutive_rollbacks} in a row)")
    for r in monitor.rollbacks[-3:]:
        trigger, outcome = r.trigger or ProbationTrigger(), r.outcome or {}
        click.echo(f"  {r.status:<15} {r.version} -> {r.previous} at window {trigger.window}: "
                   f"accuracy {_fmt(trigger.accuracy)} vs {_fmt(trigger.reference_accuracy)} "
                   f"p={_fmt(trigger.p_value)}" + (f" ({outcome['error']})" if outcome.get("error") else ""))


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


@command("gc")
@click.option("--delete", "delete", is_flag=True, help="Delete them (default: only list what would go).")
@click.pass_context
def gc_command(ctx: click.Context, delete: bool) -> None:
    """List (or with --delete, delete) ingest runs nothing refers to."""
    from ray_mlops.data.runs import collect

    found = collect(_context(ctx).storage, dry_run=not delete)
    verb = "deleted" if delete else "would delete"
    for run in found.deleted:
        click.echo(f"{verb}: {run}")
    click.echo(f"{len(found.deleted)} run(s) {verb}, {len(found.kept)} kept (latest or unfinished)"
               + ("" if delete else "; pass --delete to delete them"))


@command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the whole status as JSON.")
@click.pass_context
def status_command(ctx: click.Context, as_json: bool) -> None:
    """Serving version and replicas, monitor windows, last drift verdicts, retraining history."""
    from ray_mlops import loop

    context = _context(ctx)
    with_ray = context.address is not None
    if with_ray:
        context.connect()
    report = loop.status(context.config, with_ray=with_ray)
    if as_json:
        echo_json(report.to_json())
    else:
        _print_status(report)


@command("demo")
@click.option("--workdir", type=click.Path(file_okay=False), default="demo", show_default=True,
              help="Folder for data, the report and (unless --storage is given, which must be empty) storage.")
@click.option("--entities", type=click.IntRange(min=100), default=1500, show_default=True, help="Machines in the initial dataset.")
@click.option("--traffic", "traffic_entities", type=click.IntRange(min=50), default=800, show_default=True, help="Machines sent before drift.")
@click.option("--drift-traffic", "drift_entities", type=click.IntRange(min=50), default=800, show_default=True, help="Machines sent after drift begins (cycled).")
@click.option("--new-data", "new_entities", type=click.IntRange(min=50), default=1500, show_default=True, help="Labeled machines landing when drift begins.")
@click.option("--drift", type=click.Choice(["covariate", "prior", "concept"]), default="concept", show_default=True,
              help="concept (default) moves the decision boundary, so the production model gets worse.")
@click.option("--intensity", type=click.FloatRange(0, 5), default=1.0, show_default=True)
@click.option("--window", type=click.IntRange(min=20), default=200, show_default=True, help="Records per monitor window.")
@click.option("--baseline-windows", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--after-windows", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--trials", type=click.IntRange(min=1), default=4, show_default=True, help="Tune trials per search.")
@click.option("--rate", type=click.FloatRange(min=1), default=100.0, show_default=True, help="Records per second.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=10), default=600.0, show_default=True)
@click.pass_context
def demo_command(ctx: click.Context, workdir: str, **sizes: Any) -> None:
    """Run the whole loop once on the embedded local Ray and print its figures."""
    from ray_mlops.demo import DemoOptions, run_demo

    context = _context(ctx)
    if context.address:
        fail("demo runs on the embedded local Ray; drop --address")
    opts = DemoOptions(workdir=Path(workdir), storage=context.storage_override, **sizes)
    summary = run_demo(context.config, opts, echo=click.echo)
    click.echo("")
    click.echo("summary")
    for key, value in summary.items():
        if key != "title":
            click.echo(f"  {key:<38} {value}")


def main() -> None:
    """Console-script entry point."""
    try:
        cli(standalone_mode=True)
    except RayMlopsError as exc:  # raised while building the context (bad --config)
        fail(str(exc))


if __name__ == "__main__":
    main()
