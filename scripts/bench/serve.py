"""Serving benchmark: our Serve endpoint vs a bare FastAPI + uvicorn process, one run.

Both servers serve the same registered Pipeline on the same raw request format: the
bare server featurizes each request with the same online featurizers and calls
``predict_proba`` (one uvicorn worker, ``OMP_NUM_THREADS=1``); ours is the Serve app
(batched, prediction log on and off), one replica. An async httpx load generator runs
1, 8 and 32 concurrent clients with 1-instance and 100-instance requests.

    flock /tmp/ray-heavy.lock .venv/bin/python scripts/bench/serve.py [--seconds 6]

It starts (and stops) its own local Ray; sample data, storage and the model live in a
temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))  # the served-model builder shared with the serving tests
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from helpers import free_port, wait_for  # noqa: E402
from serve_fixtures import build_served_model, raw_instances, serve_config_for  # noqa: E402

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


async def _client(http: httpx.AsyncClient, url: str, bodies: list, stop: float, out: list) -> None:
    i = 0
    while time.perf_counter() < stop:
        started = time.perf_counter()
        try:
            r = await http.post(url, json=bodies[i % len(bodies)])
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        out.append((ok, time.perf_counter() - started))
        i += 1


async def _drive(url: str, bodies: list, clients: int, seconds: float) -> list:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        warm: list = []
        await asyncio.gather(*(_client(http, url, bodies, time.perf_counter() + 1.0, warm) for _ in range(clients)))
        out: list = []
        started = time.perf_counter()
        await asyncio.gather(*(_client(http, url, bodies, started + seconds, out) for _ in range(clients)))
        return [out, time.perf_counter() - started]


def measure(url: str, instances: list, per_request: int, clients: int, seconds: float) -> dict:
    bodies = [{"instances": [instances[(i + k) % len(instances)] for k in range(per_request)]} for i in range(50)]
    out, elapsed = asyncio.run(_drive(url, bodies, clients, seconds))
    latencies = np.array([t for ok, t in out if ok]) * 1000
    done = len(latencies)
    return {"rps": done / elapsed, "rows": done * per_request / elapsed, "errors": sum(1 for ok, _ in out if not ok),
            "p50": float(np.percentile(latencies, 50)) if done else float("nan"),
            "p99": float(np.percentile(latencies, 99)) if done else float("nan")}


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


def run(seconds: float) -> list[dict]:
    import ray
    from ray import serve

    from ray_mlops.serve import deploy as serving

    ray.init(address="local", num_cpus=2, namespace="ray_mlops", include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    rows = []
    try:
        served = build_served_model(Path(tempfile.mkdtemp()))
        instances = raw_instances(served, 200, seed=5)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        targets = {}
        bare, targets["bare"] = start_bare(served.config.storage)
        try:
            for label, log_on in (("serve", True), ("serve-nolog", False)):
                config = serve_config_for(served, port, min_replicas=1, max_replicas=1, num_cpus=1,
                                          prediction_log=log_on, max_instances=1000)
                url = serving.deploy(config)
                for per_request in (1, 100):
                    for clients in (1, 8, 32):
                        if label == "serve":
                            rows.append(dict(server="bare", n=per_request, c=clients,
                                             **measure(targets["bare"] + "/predict", instances, per_request, clients, seconds)))
                        rows.append(dict(server=label, n=per_request, c=clients,
                                         **measure(url + "/predict", instances, per_request, clients, seconds)))
                serve.delete(config.serve.app_name)
        finally:
            bare.terminate()
            bare.wait(timeout=30)
        serve.shutdown()
    finally:
        ray.shutdown()
    return rows


def table(rows: list[dict]) -> str:
    index = {(r["server"], r["n"], r["c"]): r for r in rows}
    lines = [f"{'inst/req':>8} {'clients':>7} {'server':<12} {'req/s':>8} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'errors':>6} {'vs bare':>8} {'log cost':>8}"]
    for r in rows:
        bare = index.get(("bare", r["n"], r["c"]))
        ratio = f"{r['rows'] / bare['rows']:.2f}x" if bare and r["server"] != "bare" and bare["rows"] else ""
        nolog = index.get(("serve-nolog", r["n"], r["c"]))
        cost = f"{1 - r['rps'] / nolog['rps']:+.0%}" if r["server"] == "serve" and nolog and nolog["rps"] else ""
        lines.append(f"{r['n']:>8} {r['c']:>7} {r['server']:<12} {r['rps']:>8.1f} {r['rows']:>9.0f} {r['p50']:>8.1f} "
                     f"{r['p99']:>8.1f} {r['errors']:>6} {ratio:>8} {cost:>8}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per cell (after 1 s warm-up)")
    args = parser.parse_args()
    rows = run(args.seconds)
    order = {"bare": 0, "serve": 1, "serve-nolog": 2}
    rows.sort(key=lambda r: (r["n"], r["c"], order[r["server"]]))
    print(table(rows))


if __name__ == "__main__":
    main()
