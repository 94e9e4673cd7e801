"""A registered production model, fast: for serving tests and the serving benchmark.

``served_model`` (session scope) generates a small sample dataset, builds its feature
table with the online featurization (the code the batch ingest runs in its record step,
without Ray: ``tests/test_ingest.py`` shows both give the same rows, and tests the ingest
itself), fits a small scikit-learn Pipeline on it and registers it as ``v1`` (with its
reference rows as the ``reference.parquet`` profile file) promoted to production. ``serve_instance`` starts Serve once per test module on a free port and
deletes every application afterwards.

Import them into a test module (``from serve_fixtures import served_model, ...``);
they live here rather than in conftest.py so each serving test module opts in.
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from helpers import free_port

SERVE_ENTITIES = 300


@dataclass
class ServedModel:
    config: object        # ray_mlops.config.Config
    storage: object       # ray_mlops.storage.Storage
    registry: object      # ray_mlops.registry.Registry
    table: pd.DataFrame   # the feature table the model was fit on
    data_root: Path


def fit_small_pipeline(table: pd.DataFrame, schema, C: float = 1.0) -> Pipeline:
    """A plain scikit-learn Pipeline over the schema's features."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                        ("scale", StandardScaler())])
    categorical = Pipeline([("impute", SimpleImputer(missing_values=None, strategy="constant", fill_value="missing")),
                            ("onehot", OneHotEncoder(handle_unknown="ignore"))])
    features = ColumnTransformer([("num", numeric, schema.numeric), ("cat", categorical, schema.categorical)])
    pipeline = Pipeline([("features", features), ("model", LogisticRegression(C=C, max_iter=500))])
    return pipeline.fit(table[list(schema.features)], table[schema.label].astype(int))


def reference_bytes(table: pd.DataFrame, schema, rows: int = 200) -> bytes:
    buffer = io.BytesIO()
    table[list(schema.features) + [schema.label]].head(rows).to_parquet(buffer, index=False)
    return buffer.getvalue()


def register_version(served: ServedModel, C: float = 1.0, *, promote: bool = True) -> str:
    """Fit and register another version on the same table (optionally promoted)."""
    from ray_mlops.data.schema import feature_schema

    schema = feature_schema(served.config)
    model = fit_small_pipeline(served.table, schema, C)
    version = served.registry.register(
        model, params={"family": "logistic_regression", "C": C}, metrics={"roc_auc": 0.8},
        data_fingerprint="serve-tests", config_hash=served.config.digest(),
        profile_files={"reference.parquet": reference_bytes(served.table, schema)})
    if promote:
        served.registry.promote(version, reason="serve tests")
    return version


def plain_feature_table(config) -> pd.DataFrame:
    """The feature table of ``config``'s generated sample data, without Ray (ordered by key, as an ingest's)."""
    from ray_mlops.data.online import featurize_instances
    from ray_mlops.data.schema import feature_schema
    from ray_mlops.traffic import raw_records

    schema = feature_schema(config)
    instances, labels = raw_records(config.data.root)
    table = featurize_instances(config, instances, schema)
    table.insert(0, schema.entity_key, [r[schema.entity_key] for r in instances])
    table[schema.label] = np.asarray(labels, dtype=int)
    return table.sort_values(schema.entity_key, kind="stable").reset_index(drop=True)


def build_served_model(root: Path, entities: int = SERVE_ENTITIES) -> ServedModel:
    """Generate, featurize (no Ray), fit, register and promote: a servable registry."""
    from ray_mlops.config import load_config
    from ray_mlops.data.generate import GenerateSpec, generate
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage

    data = root / "data"
    generate(data, GenerateSpec(entities=entities, seed=3))
    config = load_config(overrides={"data.root": str(data), "storage": str(root / "store")})
    storage = Storage(config.storage)
    served = ServedModel(config, storage, Registry(storage, config.model_name), plain_feature_table(config), data)
    register_version(served, C=1.0)
    return served


def raw_instances(served: ServedModel, n: int, seed: int = 0) -> list[dict]:
    """``n`` raw records in the request format, built from the generated source files."""
    rng = np.random.default_rng(seed)
    data = served.data_root
    machines = pd.read_csv(data / "machines.csv").merge(pd.read_parquet(data / "specs.parquet"), on="machine_id")
    picks = machines.iloc[rng.integers(0, len(machines), n)]
    telemetry = pd.concat(pd.read_parquet(p) for p in sorted((data / "telemetry").glob("*.parquet")))
    by_machine = dict(tuple(telemetry.groupby("machine_id")))
    records = []
    for _, row in picks.iterrows():
        mid = row["machine_id"]
        notes = [p.read_text() for p in sorted((data / "notes").glob(f"{mid}_*.txt"))]
        images = [base64.b64encode(p.read_bytes()).decode() for p in sorted((data / "images").glob(f"{mid}_*.png"))]
        readings = by_machine[mid].tail(24)
        records.append({
            "machine_id": mid, "model": row["model"], "site": row["site"], "age_years": float(row["age_years"]),
            "load_class": row["load_class"], "rated_power_kw": float(row["rated_power_kw"]),
            "firmware": int(row["firmware"]),
            "events": [{"event": {"type": "error", "severity": 3}, "downtime_min": 12.5,
                        "parts": [{"name": "seal", "cost": 40.0}], "technician": {"shift": "day"}}],
            "notes": notes, "images": images,
            "telemetry": [{"timestamp": str(t), "temperature": float(a), "vibration": float(b),
                           "pressure": float(c), "rotation": float(d)}
                          for t, a, b, c, d in readings[["timestamp", "temperature", "vibration", "pressure", "rotation"]].itertuples(index=False)],
        })
    return records


@pytest.fixture(scope="session")
def served_model(tmp_path_factory) -> ServedModel:
    return build_served_model(tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def serve_instance(ray_session):
    """Serve on 127.0.0.1 and a free port for one test module; yields the port."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    for name in list(serve.status().applications):
        serve.delete(name)
    serve.shutdown()


def serve_config_for(served: ServedModel, port: int, **serve_overrides):
    """``served.config`` with its serve section overridden (port, replicas, delays...)."""
    section = served.config.serve.model_copy(update={"port": port, **serve_overrides})
    return served.config.model_copy(update={"serve": section})


def running_replicas(app: str) -> list[dict]:
    """Serve's details of the RUNNING replicas of ``app``'s predictor deployment."""
    from ray_mlops.serve import deploy as serving

    details = serving._app_details(app) or {}
    replicas = details.get("deployments", {}).get(serving.DEPLOYMENT, {}).get("replicas", [])
    return [r for r in replicas if serving._plain(r.get("state")) == "RUNNING"]


class ClientThreads:
    """``clients`` daemon threads running ``self._run(seed)`` from ``with`` entry until its exit."""

    def __init__(self, clients: int):
        import threading

        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]

    def _run(self, seed: int) -> None:
        raise NotImplementedError

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


class Load(ClientThreads):
    """``clients`` threads posting /predict without retries until stopped.

    Each result is ``(status, model_version or error text)``; a connection error or a
    timeout counts as status 0.
    """

    def __init__(self, url: str, instances: list[dict], clients: int = 8, per_request: int = 1):
        super().__init__(clients)
        self.url, self.instances, self.per_request = url, instances, per_request
        self.results: list[tuple[int, str]] = []
        self.success_times: list[float] = []

    def _run(self, seed: int) -> None:
        import httpx

        i = seed
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                body = {"instances": [self.instances[(i + k) % len(self.instances)] for k in range(self.per_request)]}
                i += 1
                try:
                    r = client.post(f"{self.url}/predict", json=body)
                    result = (r.status_code, r.json().get("model_version", r.text) if r.status_code == 200 else r.text)
                except Exception as exc:  # counted, never retried
                    result = (0, f"{type(exc).__name__}: {exc}")
                with self._lock:
                    self.results.append(result)
                    if result[0] == 200:
                        self.success_times.append(time.monotonic())

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def failures(self) -> list[tuple[int, str]]:
        with self._lock:
            return [r for r in self.results if r[0] != 200]

    def longest_gap_between_successes(self) -> float:
        """The longest time (s) no client got a successful response, while the load ran."""
        with self._lock:
            times = sorted(self.success_times)
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)
