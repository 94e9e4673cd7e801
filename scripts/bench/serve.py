"""Serving benchmark: an in-process floor, a bare FastAPI server and our Serve app, one run.

All three serve the same registered Pipeline on the same raw request format:

- ``floor``: featurize + predict in this process, no HTTP (what the hardware allows one
  core per call; it has no clients, so every clients row shows the same floor);
- ``bare``: FastAPI + uvicorn (one worker, ``OMP_NUM_THREADS=1``) featurizing each
  request with the same online featurizers and calling ``predict_proba``;
- ``serve`` / ``serve-nolog``: our Serve app, one replica (``--replicas``), prediction log on and off;
- ``handle``: the same app called from Python through a ``DeploymentHandle``
  (``predict_records``: no HTTP, no proxy), prediction log on.
- ``serve-direct``: our app at its replicas' own HTTP ports (clients spread over them), skipping the proxy, when Serve's direct
  ingress is on (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` or ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` in the
  environment that starts Ray; measured only then);
- ``serve-shadow`` (with ``--shadow``): our app with a second version loaded as a shadow beside
  production (each logged batch predicted by both); the shadow's cost is printed per cell as
  production-only rows/s over shadow rows/s (the same load).

An async httpx load generator runs each clients count with 1-instance and 100-instance
requests. Each cell is the best (by rows/s) of ``--repeats`` runs. ``--json PATH`` writes
one object per cell (``instances``, ``clients``, ``server``, ``rows_per_s``, ``p50_ms``,
``p99_ms``, ``errors``, and for HTTP cells ``cpu_ms_per_request``: CPU milliseconds per request of
each process involved: ``proxy``, ``replica``, ``bare``, ``client``); ``--servers`` picks which servers run;
``--profile`` instead samples the replica and the Serve proxy
with py-spy under load and prints their top functions.

    flock /tmp/ray.lock .venv/bin/python scripts/bench/serve.py [--seconds 6] [--repeats 3] [--json out.json]

It starts (and stops) its own local Ray; sample data, storage and the model live in a
temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the served-model builder shared with the serving tests
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from helpers import free_port, wait_for  # noqa: E402
from serve_fixtures import build_served_model, raw_instances, register_version, serve_config_for  # noqa: E402

BARE_SERVER = textwrap.dedent('''
    import sys
    import uvicorn
    from fastapi import FastAPI, Request
    from ray_mlops.config import load_config
    from ray_mlops.data.online import featurize_instances
    from ray_mlops.data.schema import feature_schema
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage

    storage, port = sys.argv[1], int(sys.argv[2])
    config = load_config(overrides={"storage": storage})
    schema = feature_schema(config)
    registry = Registry(Storage(storage), config.model_name)
    version = registry.resolve("production")
    model = registry.load(version)
    app = FastAPI()

    @app.post("/predict")
    def predict(body: dict):
        instances = [{k: v for k, v in r.items() if k != config.data.entity_key} for r in body["instances"]]
        proba = model.predict_proba(featurize_instances(config, instances, schema))
        return {"predictions": model.classes_[proba.argmax(axis=1)].tolist(),
                "probabilities": proba.tolist(), "model_version": version}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
''')


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_of(pids: dict[str, list[int]]) -> dict[str, float]:
    return {role: sum(_cpu_seconds(pid) for pid in group) for role, group in pids.items()}


async def _client(http: httpx.AsyncClient, url: str, bodies: list, stop: float, out: list) -> None:
    i = 0
    while time.perf_counter() < stop:
        started = time.perf_counter()
        try:
            r = await http.post(url, content=bodies[i % len(bodies)], headers={"content-type": "application/json"})
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        out.append((ok, time.perf_counter() - started))
        i += 1


async def _drive(urls: list[str], bodies: list, clients: int, seconds: float, roles: dict[str, list[int]]) -> list:
    """(results, elapsed seconds, CPU seconds of each role's processes) of the measured part, after a 1 s warm-up;
    client ``i`` posts to ``urls[i % len(urls)]``."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        warm: list = []
        await asyncio.gather(*(_client(http, urls[i % len(urls)], bodies, time.perf_counter() + 1.0, warm)
                               for i in range(clients)))
        out: list = []
        before = _cpu_of(roles)
        started = time.perf_counter()
        await asyncio.gather(*(_client(http, urls[i % len(urls)], bodies, started + seconds, out) for i in range(clients)))
        elapsed = time.perf_counter() - started
        after = _cpu_of(roles)
        return [out, elapsed, {role: after[role] - before[role] for role in roles}]


def request_batches(instances: list, per_request: int, count: int = 50) -> list[list[dict]]:
    return [[instances[(i + k) % len(instances)] for k in range(per_request)] for i in range(count)]


def _cell(server: str, per_request: int, clients: int, elapsed: float, results: list) -> dict:
    latencies = np.array([t for ok, t in results if ok]) * 1000
    done = len(latencies)
    return {"server": server, "instances": per_request, "clients": clients, "requests_per_s": done / elapsed,
            "rows_per_s": done * per_request / elapsed, "errors": sum(1 for ok, _ in results if not ok),
            "p50_ms": float(np.percentile(latencies, 50)) if done else float("nan"),
            "p99_ms": float(np.percentile(latencies, 99)) if done else float("nan")}


def measure(server: str, url: str | list[str], instances: list, per_request: int, clients: int, seconds: float,
            pids: dict[str, list[int]] | None = None) -> dict:
    """One HTTP cell: ``clients`` concurrent clients posting ``per_request`` instances each (spread over ``url``
    when it is a list); with ``pids`` (role -> processes, e.g. the proxy and the replica), also each role's
    CPU milliseconds per request."""
    bodies = [json.dumps({"instances": batch}).encode() for batch in request_batches(instances, per_request)]
    roles = dict(pids or {}, client=[os.getpid()])
    out, elapsed, cpu = asyncio.run(_drive(url if isinstance(url, list) else [url], bodies, clients, seconds, roles))
    cell = _cell(server, per_request, clients, elapsed, out)
    done = max(1, sum(1 for ok, _ in out if ok))
    cell["cpu_ms_per_request"] = {role: round(seconds_used * 1000 / done, 2) for role, seconds_used in cpu.items()}
    return cell


async def _handle_client(handle: Any, bodies: list, stop: float, out: list) -> None:
    i = 0
    while time.perf_counter() < stop:
        started = time.perf_counter()
        try:
            await handle.predict_records.remote(bodies[i % len(bodies)])
            ok = True
        except Exception:  # a failed call is counted, never retried
            ok = False
        out.append((ok, time.perf_counter() - started))
        i += 1


async def _drive_handle(app_name: str, bodies: list, clients: int, seconds: float) -> list:
    from ray import serve

    handle = serve.get_app_handle(app_name)
    warm: list = []
    await asyncio.gather(*(_handle_client(handle, bodies, time.perf_counter() + 1.0, warm) for _ in range(clients)))
    out: list = []
    started = time.perf_counter()
    await asyncio.gather(*(_handle_client(handle, bodies, started + seconds, out) for _ in range(clients)))
    return [out, time.perf_counter() - started]


def measure_handle(app_name: str, instances: list, per_request: int, clients: int, seconds: float) -> dict:
    """One DeploymentHandle cell: ``clients`` concurrent Python callers of ``predict_records``."""
    bodies = [{"instances": batch} for batch in request_batches(instances, per_request)]
    out, elapsed = asyncio.run(_drive_handle(app_name, bodies, clients, seconds))
    return _cell("handle", per_request, clients, elapsed, out)


def floor_predictor(served) -> Any:
    """The replica's featurize + predict for a list of raw records (FeatureRows, the compiled path), in this process."""
    from ray_mlops.data.online import featurize_rows
    from ray_mlops.data.schema import feature_schema
    from ray_mlops.serve.model import load_version

    schema = feature_schema(served.config)
    model = load_version(served.registry, "production", schema)
    return lambda records: model.predict(featurize_rows(served.config, records, schema))


def measure_floor(predict: Any, key: str, instances: list, per_request: int, seconds: float) -> dict:
    """Featurize + predict one request's records (without the entity ``key``) after another, no HTTP, no JSON."""
    batches = [[{k: v for k, v in r.items() if k != key} for r in batch]
               for batch in request_batches(instances, per_request)]
    warm_stop = time.perf_counter() + 0.5
    while time.perf_counter() < warm_stop:
        predict(batches[0])
    out, i = [], 0
    started = time.perf_counter()
    while time.perf_counter() < started + seconds:
        t0 = time.perf_counter()
        predict(batches[i % len(batches)])
        out.append((True, time.perf_counter() - t0))
        i += 1
    return _cell("floor", per_request, 1, time.perf_counter() - started, out)


def best_of(repeats: int, run_once: Any) -> dict:
    """The best of ``repeats`` runs of a cell by rows/s (the machine is shared)."""
    best = max((run_once() for _ in range(repeats)), key=lambda cell: cell["rows_per_s"])
    print(f"{best['instances']:>4} inst x {best['clients']:>2} clients {best['server']:<12} {best['rows_per_s']:>8.0f} rows/s "
          f"p50 {best['p50_ms']:.1f} ms p99 {best['p99_ms']:.1f} ms {_cpu_text(best)}", file=sys.stderr, flush=True)
    return best


def start_bare(storage: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    script = Path(tempfile.mkdtemp()) / "bare_server.py"
    script.write_text(BARE_SERVER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), storage, str(port)], env=env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None

    wait_for(up, timeout=120, message="bare server")
    return proc, url


@dataclass
class Plan:
    """What one benchmark run measures."""

    seconds: float
    repeats: int
    sizes: tuple[int, ...]
    clients: tuple[int, ...]
    profile: bool = False
    replicas: int = 1
    shadow: bool = False
    servers: tuple[str, ...] = ()  # empty: every server

    def wants(self, *servers: str) -> bool:
        """Whether any of ``servers`` is measured in this run."""
        return not self.servers or any(server in self.servers for server in servers)


def _start_ray() -> None:
    import ray

    ray.init(address="local", num_cpus=2, namespace="ray_mlops", include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False)


def _serve_cells(plan: Plan, served, port: int, instances: list, bare: tuple[str, int]) -> list[dict]:
    from ray import serve

    from ray_mlops.serve import deploy as serving

    rows = []
    for label, log_on in (("serve", True), ("serve-nolog", False), ("serve-shadow", True))[:3 if plan.shadow else 2]:
        if not plan.wants(label) and (label != "serve" or not plan.wants("bare", "handle", "serve-direct")):
            continue
        config = serve_config_for(served, port, min_replicas=plan.replicas, max_replicas=plan.replicas, num_cpus=1,
                                  prediction_log=log_on, max_instances=1000)
        url = serving.deploy(config) + "/predict"
        if label == "serve-shadow":
            serving.set_shadow(config, register_version(served, C=0.5, promote=False))
        pids = _serve_pids()
        direct = [u + "/predict" for u in direct_urls(config.serve.app_name, port)] if label == "serve" else []
        cells = [(label, lambda n, c: measure(label, url, instances, n, c, plan.seconds, pids))]
        if label == "serve":
            cells.insert(0, ("bare", lambda n, c: measure("bare", bare[0], instances, n, c, plan.seconds,
                                                          {"bare": [bare[1]]})))
            cells.append(("handle", lambda n, c: measure_handle(config.serve.app_name, instances, n, c, plan.seconds)))
            if direct:  # the clients spread over the replicas' ports (no load balancer in front)
                cells.append(("serve-direct", lambda n, c: measure("serve-direct", direct, instances, n, c,
                                                                   plan.seconds, {"replica": pids["replica"]})))
        for per_request in plan.sizes:
            for clients in plan.clients:
                rows += [best_of(plan.repeats, lambda: run_cell(per_request, clients))
                         for name, run_cell in cells if plan.wants(name)]
        serve.delete(config.serve.app_name)
    return rows


def run(plan: Plan) -> list[dict]:
    """Every cell of ``plan``: floor, bare and our Serve app (log on and off)."""
    import ray
    from ray import serve

    _start_ray()
    try:
        served = build_served_model(Path(tempfile.mkdtemp()))
        instances = raw_instances(served, 200, seed=5)
        floor = floor_predictor(served)
        rows = []
        for per_request in plan.sizes if plan.wants("floor") else ():
            cell = best_of(plan.repeats, lambda: measure_floor(floor, served.config.data.entity_key, instances, per_request, plan.seconds))
            rows += [dict(cell, clients=clients) for clients in plan.clients]
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        bare, bare_url = start_bare(served.config.storage)
        try:
            rows += _serve_cells(plan, served, port, instances, (bare_url + "/predict", bare.pid))
        finally:
            bare.terminate()
            bare.wait(timeout=30)
        serve.shutdown()
    finally:
        ray.shutdown()
    return rows


# -- profile mode: py-spy on the replica and the proxy under load -------------------------
def _descendants(root: int) -> list[int]:
    """Every process under ``root`` (this driver's Ray: its raylet and workers), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
            children.setdefault(int(rest.rsplit(") ", 1)[1].split()[1]), []).append(int(pid))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _serve_pids() -> dict[str, list[int]]:
    """The replicas' and the HTTP proxy's processes (by Ray's process titles), under this driver only."""
    pids: dict[str, list[int]] = {"proxy": [], "replica": []}
    for pid in _descendants(os.getpid()):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith("ray::ServeReplica") and "Predictor" in title:
            pids["replica"].append(pid)
        elif title.startswith("ray::ProxyActor"):
            pids["proxy"].append(pid)
    return pids


def direct_urls(app_name: str, proxy_port: int) -> list[str]:
    """The app's replicas' own HTTP addresses when Serve's direct ingress is on (``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``)."""
    from ray.serve.context import _get_global_client

    urls = []
    for group in _get_global_client().get_serve_details().get("target_groups", []):
        if group.get("app_name") in (app_name, "", None) and str(group.get("protocol")).upper().endswith("HTTP"):
            urls += [f"http://127.0.0.1:{t['port']}" for t in group.get("targets", [])
                     if t.get("port") not in (None, proxy_port)]
    return sorted(set(urls))


def _top(collapsed: str, n: int = 15) -> list[tuple[str, float, float]]:
    """(function, self share, inclusive share) of py-spy's collapsed stacks, by self time."""
    own: dict[str, int] = {}
    total_in: dict[str, int] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for name in set(frames):
            total_in[name] = total_in.get(name, 0) + int(count)
    ranked = sorted(own, key=own.get, reverse=True)[:n]
    return [(name, own[name] / total, total_in[name] / total) for name in ranked]


def profile(plan: Plan) -> None:
    """Sample the replica and the proxy with py-spy while 100-instance and 1-instance load runs."""
    from ray import serve

    from ray_mlops.serve import deploy as serving

    _start_ray()
    try:
        served = build_served_model(Path(tempfile.mkdtemp()))
        instances = raw_instances(served, 200, seed=5)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        config = serve_config_for(served, port, min_replicas=1, max_replicas=1, num_cpus=1, max_instances=1000)
        base = serving.deploy(config)
        url = (direct_urls(config.serve.app_name, port) or [base])[0] + "/predict"  # a replica's own port with direct ingress
        spy = Path(sys.executable).with_name("py-spy")
        for per_request, clients in ((100, 8), (1, 1)):
            outs = {}
            spies = {role: subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                                             "--duration", str(int(plan.seconds)), "--nonblocking",
                                             "--output", str(outs.setdefault(role, Path(tempfile.mkdtemp()) / "p.txt"))],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for role, group in _serve_pids().items() for pid in group[:1]}
            cell = measure("serve", url, instances, per_request, clients, plan.seconds + 1, _serve_pids())
            for role, proc in spies.items():
                proc.wait(timeout=120)
                print(f"\n== {role} ({url}), {per_request} instances/request, {clients} clients: "
                      f"{cell['rows_per_s']:.0f} rows/s, p50 {cell['p50_ms']:.1f} ms; CPU ms/request: {_cpu_text(cell)} ==")
                print(f"{'self':>6} {'total':>6}  function")
                for name, own, inclusive in _top(outs[role].read_text() if outs[role].exists() else ""):
                    print(f"{own:>6.1%} {inclusive:>6.1%}  {name}")
        serve.shutdown()
    finally:
        import ray

        ray.shutdown()


# -- output ----------------------------------------------------------------------------
ORDER = {"floor": 0, "bare": 1, "serve": 2, "serve-nolog": 3, "handle": 4, "serve-direct": 5, "serve-shadow": 6}


def _cpu_text(row: dict) -> str:
    return " ".join(f"{role} {ms:.1f}" for role, ms in (row.get("cpu_ms_per_request") or {}).items())


def table(rows: list[dict]) -> str:
    """Floor, bare and ours side by side per cell, with ours/bare, ours/floor and the log's cost."""
    index = {(r["server"], r["instances"], r["clients"]): r for r in rows}
    lines = [f"{'inst/req':>8} {'clients':>7} {'server':<12} {'req/s':>8} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'errors':>6} {'vs bare':>8} {'vs floor':>8} {'log cost':>8}  CPU ms/request by process"]
    for r in rows:
        cell = (r["instances"], r["clients"])

        def ratio(base: str) -> str:
            other = index.get((base, *cell))
            show = other and r["server"] not in ("floor", base) and other["rows_per_s"]
            return f"{r['rows_per_s'] / other['rows_per_s']:.2f}x" if show else ""

        nolog = index.get(("serve-nolog", *cell))
        cost = (f"{1 - r['rows_per_s'] / nolog['rows_per_s']:+.0%}"
                if r["server"] == "serve" and nolog and nolog["rows_per_s"] else "")
        lines.append(f"{r['instances']:>8} {r['clients']:>7} {r['server']:<12} {r['requests_per_s']:>8.1f} "
                     f"{r['rows_per_s']:>9.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>6} "
                     f"{ratio('bare'):>8} {ratio('floor'):>8} {cost:>8}  {_cpu_text(r)}")
    return "\n".join(lines)


def shadow_costs(rows: list[dict]) -> str:
    """Per cell: production-only rows/s over rows/s with a shadow, and the p50 latencies."""
    index = {(r["server"], r["instances"], r["clients"]): r for r in rows}
    lines = []
    for (server, instances, clients), r in index.items():
        alone = index.get(("serve", instances, clients))
        if server == "serve-shadow" and alone and r["rows_per_s"]:
            lines.append(f"shadow cost, {instances} inst/req, {clients} clients: "
                         f"{alone['rows_per_s'] / r['rows_per_s']:.2f}x (rows/s {alone['rows_per_s']:.0f} alone, "
                         f"{r['rows_per_s']:.0f} with shadow; p50 {alone['p50_ms']:.1f} vs {r['p50_ms']:.1f} ms)")
    return "\n".join(lines)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per cell (after 1 s warm-up)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell; the best (by rows/s) is reported")
    parser.add_argument("--sizes", type=_ints, default=(1, 100), help="instances per request, comma-separated")
    parser.add_argument("--clients", type=_ints, default=(1, 8, 32), help="concurrent clients, comma-separated")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the cells to PATH as a JSON list")
    parser.add_argument("--profile", action="store_true", help="py-spy the replica and proxy under load instead")
    parser.add_argument("--replicas", type=int, default=1, help="replicas of our app (1 CPU each; the machine has 2)")
    parser.add_argument("--shadow", action="store_true", help="also measure our app with a shadow version loaded")
    parser.add_argument("--servers", default="", help=f"only these servers, comma-separated (of {', '.join(ORDER)})")
    args = parser.parse_args()
    plan = Plan(args.seconds, max(1, args.repeats), args.sizes, args.clients, args.profile, max(1, args.replicas),
                args.shadow, tuple(name for name in args.servers.split(",") if name))
    if plan.profile:
        profile(plan)
        return
    rows = sorted(run(plan), key=lambda r: (r["instances"], r["clients"], ORDER[r["server"]]))
    print(table(rows))
    if plan.shadow:
        print(shadow_costs(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
