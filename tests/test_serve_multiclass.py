"""Multi-class (string labels) and regression end to end: ingest → register → Serve over HTTP → monitor.

Real data shipped with scikit-learn (iris with its species names; diabetes progression),
written as a CSV table source, ingested with the real ingest, fitted as a plain
scikit-learn Pipeline, registered and served by real Serve on the shared Ray. The
prediction and feedback logs the replicas write are read back by the real monitor
(:class:`ray_mlops.monitor.core.Monitor`, without its actor), which tests windows of them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_iris

from helpers import wait_for
from monitor_fixtures import RecordingRollback

from ray_mlops.config import Config, config_from_dict
from ray_mlops.serve import deploy as serving
from ray_mlops.contracts import FEEDBACK_DIR, PREDICTIONS_DIR, read_log

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # two more Serve apps and monitors (~35 s); multi-class is covered without Ray by test_multiclass/test_output_drift

VALIDATION_FRACTION = 0.4  # enough unseen rows (>= 30) for the monitor's output reference
MONITOR = {"window_size": 100, "min_window": 50, "min_labels": 30, "alpha": 0.05, "probation_windows": 2}


@dataclass
class Project:
    config: Config
    storage: object      # ray_mlops.storage.Storage
    registry: object     # ray_mlops.registry.Registry
    raw: pd.DataFrame    # the source table (key, columns, label)
    model: object        # the registered production Pipeline
    url: str = ""


def _write_table(root: Path, frame: pd.DataFrame) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    frame.to_csv(data / "table.csv", index=False)
    return data


def _config(root: Path, data: Path, name: str, port: int, columns: dict, label: str, task: str) -> Config:
    return config_from_dict({
        "project": name, "model_name": name, "storage": str(root / "store"),
        "data": {"root": str(data), "entity_key": "id", "label": label, "task": task,
                 "sources": [{"name": "table", "path": "table.csv", "format": "csv", "columns": columns}]},
        "train": {"validation_fraction": VALIDATION_FRACTION},
        "serve": {"app_name": name, "route_prefix": f"/{name}", "port": port, "num_cpus": 0.25,
                  "min_replicas": 1, "max_replicas": 1, "log_flush_interval_s": 0.3},
        "monitor": MONITOR,
    }, origin=f"{name} test config")


def _register(config: Config, raw: pd.DataFrame, family: str) -> Project:
    """Ingest (real, on the shared Ray), fit on the key-split training rows, register, promote."""
    from ray_mlops.data.ingest import ingest
    from ray_mlops.data.schema import read_feature_table, read_reference
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage
    from ray_mlops.train.pipelines import fit_pipeline, split_by_key

    storage = Storage(config.storage)
    result = ingest(config, storage)
    schema, fingerprint = result.schema, result.fingerprint
    table, reference = read_feature_table(storage, result), read_reference(storage, result)
    train, valid = split_by_key(table, schema.entity_key, VALIDATION_FRACTION)
    model = fit_pipeline(schema, family, {}, 0, train)
    predicted = model.predict(valid[list(schema.features)])
    if schema.task == "classification":
        metrics = {"accuracy": float(np.mean(predicted == valid[schema.label].to_numpy()))}
    else:
        metrics = {"rmse": float(np.sqrt(np.mean((predicted - valid[schema.label].to_numpy()) ** 2)))}
    buffer = io.BytesIO()
    reference.to_parquet(buffer, index=False)
    registry = Registry(storage, config.model_name)
    version = registry.register(model, params={"family": family}, metrics=metrics, data_fingerprint=fingerprint,
                                config_hash=config.digest(), profile_files={"reference.parquet": buffer.getvalue()},
                                extra={"validation_rows": len(valid), "split": {
                                    "validation_fraction": VALIDATION_FRACTION, "key": schema.entity_key,
                                    "key_hash": "sha1", "train_rows": len(train), "validation_rows": len(valid)}})
    registry.promote(version, reason="multi-class/regression serve tests")
    return Project(config, storage, registry, raw, model)


@pytest.fixture(scope="module")
def iris(ray_session, serve_instance, tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("iris")
    data = load_iris(as_frame=True)
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    raw = pd.DataFrame(data.data.to_numpy(), columns=columns)
    raw.insert(0, "id", [f"flower{i:03d}" for i in range(len(raw))])
    raw["species"] = np.asarray(data.target_names, dtype=object)[data.target]
    spec = {c: {"type": "float"} for c in columns} | {"species": {"type": "category"}}
    config = _config(root, _write_table(root, raw), "iris", serve_instance, spec, "species", "classification")
    project = _register(config, raw, "logistic_regression")
    project.url = serving.deploy(config)
    return project


@pytest.fixture(scope="module")
def diabetes(ray_session, serve_instance, tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("diabetes")
    data = load_diabetes(as_frame=True, scaled=False)
    raw = data.data.copy()
    raw.columns = [f"x_{c}" for c in raw.columns]
    raw.insert(0, "id", [f"patient{i:03d}" for i in range(len(raw))])
    raw["progression"] = data.target.to_numpy(dtype=float)
    spec = {c: {"type": "float"} for c in raw.columns if c.startswith("x_")} | {"progression": {"type": "float"}}
    config = _config(root, _write_table(root, raw), "diabetes", serve_instance, spec, "progression", "regression")
    project = _register(config, raw, "ridge")
    project.url = serving.deploy(config)
    return project


def instances(project: Project, rows: pd.DataFrame) -> list[dict]:
    """Raw request records: the key and the table's columns, without the label."""
    label = project.config.data.label
    return [{k: (v if k == "id" else float(v)) for k, v in row.items() if k != label}
            for row in rows.to_dict("records")]


def predict(project: Project, rows: pd.DataFrame) -> dict:
    r = httpx.post(f"{project.url}/predict", json={"instances": instances(project, rows)}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def feedback(project: Project, request_id: str, labels: list) -> httpx.Response:
    return httpx.post(f"{project.url}/feedback", json={"request_id": request_id, "labels": labels}, timeout=60)


def send_all(project: Project, rows: pd.DataFrame, per_request: int = 25, labels: bool = True) -> int:
    """Predict ``rows`` in requests of ``per_request`` and send their true labels back."""
    label = project.config.data.label
    for start in range(0, len(rows), per_request):
        part = rows.iloc[start:start + per_request]
        body = predict(project, part)
        if labels:
            assert feedback(project, body["request_id"], part[label].tolist()).status_code == 200
    return len(rows)


def logged(project: Project, rows: int) -> pd.DataFrame:
    """The prediction log once it holds ``rows`` rows (as the monitor reads it back)."""
    from ray_mlops.contracts import read_partitioned

    def ready():
        frame = read_partitioned(project.storage, PREDICTIONS_DIR)
        return (frame,) if len(frame) >= rows else None

    return wait_for(ready, timeout=60, message=f"{rows} rows in the prediction log")[0]


def monitor(project: Project, **rollback):
    from ray_mlops.monitor.core import Monitor

    return Monitor(project.config, project.storage,
                   rollback=RecordingRollback(project.config, project.storage, **rollback) if rollback else None)


# -- multi-class ---------------------------------------------------------------------------
def test_multiclass_predict_returns_string_labels_and_probabilities_in_classes_order(iris):
    model = httpx.get(f"{iris.url}/model").json()
    assert model["task"] == "classification" and model["classes"] == ["setosa", "versicolor", "virginica"]
    rows = iris.raw.iloc[::10]
    body = predict(iris, rows)
    assert all(isinstance(p, str) for p in body["predictions"])
    proba = np.asarray(body["probabilities"])
    assert proba.shape == (len(rows), 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-4)
    assert body["predictions"] == [model["classes"][i] for i in proba.argmax(axis=1)]
    features = rows[["sepal_length", "sepal_width", "petal_length", "petal_width"]].reset_index(drop=True)
    assert body["predictions"] == iris.model.predict(features).tolist()
    assert np.allclose(proba, iris.model.predict_proba(features), atol=1e-5)
    assert np.mean(np.asarray(body["predictions"]) == rows["species"].to_numpy()) > 0.9


@pytest.mark.parametrize("labels, field", [
    ([1, "setosa"], "labels[0]"),            # an int where the classes are strings
    (["setosa", "unicorn"], "labels[1]"),   # not one of the classes
    (["setosa", True], "labels[1]"),        # a bool is not a label
    (["setosa", 2.5], "labels[1]"),
    (["setosa", ""], "labels[1]"),
])
def test_multiclass_feedback_refuses_labels_that_are_not_classes(iris, labels, field):
    body = predict(iris, iris.raw.iloc[:2])
    r = feedback(iris, body["request_id"], labels)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["detail"].startswith(field)


def test_multiclass_logs_and_monitor_windows_with_accuracy_and_label_drift(iris):
    before = len(read_log(iris.storage))
    sent = send_all(iris, iris.raw.sample(frac=1.0, random_state=0))
    frame = logged(iris, before + sent)
    assert set(frame["prediction"].map(type)) == {str}
    assert frame["prediction"].isin(["setosa", "versicolor", "virginica"]).all()
    labels = read_log(iris.storage, FEEDBACK_DIR)  # written before /feedback answers
    assert len(labels) >= sent and set(labels["label"].map(type)) == {str}

    watcher = monitor(iris)
    watcher.receive(frame)
    verdicts = [v for v in watcher.step() if not v.get("skipped")]
    assert verdicts, watcher.state
    window = verdicts[0]
    assert window["reference_version"] == "v1" and window["rows"] == MONITOR["window_size"]
    assert window["detectors"]["predictions"] is not None and window["detectors"]["accuracy"] is not None
    assert window["labeled"] >= MONITOR["min_labels"] and window["accuracy"] > 0.85
    assert {"prediction", "prediction_confidence", "accuracy", "petal_length"} <= set(window["features"])
    assert window["features"]["prediction"]["test"].startswith(("chi2", "fisher"))

    # only one species in production: the predicted-label counts drift (the last window is all setosa)
    setosa = iris.raw[iris.raw["species"] == "setosa"]
    send_all(iris, pd.concat([setosa] * 3).reset_index(drop=True), labels=False)
    watcher.receive(logged(iris, before + sent + 3 * len(setosa)))
    drifted = [v for v in watcher.step() if not v.get("skipped")]
    assert drifted and drifted[-1]["detectors"]["predictions"] < 0.01 and drifted[-1]["drift"]


def test_multiclass_probation_rolls_back_a_worse_promoted_version(iris):
    from ray_mlops.data.schema import feature_schema
    from ray_mlops.train.pipelines import fit_pipeline

    registry = iris.registry
    production = registry.get_alias("production")
    shuffled = iris.raw.assign(species=iris.raw["species"].sample(frac=1.0, random_state=1).to_numpy())
    worse = fit_pipeline(feature_schema(iris.config), "logistic_regression", {}, 0, shuffled)
    meta = registry.metadata(production)
    version = registry.register(  # what a retraining registers: its lineage, the accuracy it claims
        worse, params={"family": "logistic_regression"}, metrics=meta["metrics"], data_fingerprint="shuffled",
        config_hash="retrained", profile_files={"reference.parquet": registry.read_profile_file(production, "reference.parquet")},
        parent=production, extra={**meta["extra"], "retrain": "r-multiclass"})
    watcher = monitor(iris, fail_swap=False)
    watcher.step()  # the reference follows production first
    registry.promote(version, reason="retraining r-multiclass")
    assert serving.swap(iris.config, version) == version
    watcher.step()
    assert watcher.state.probation.active.version == version

    before = len(read_log(iris.storage))
    sent = send_all(iris, iris.raw.sample(n=MONITOR["window_size"], random_state=2))
    records = logged(iris, before + sent)
    watcher.receive(records[records["model_version"] == version])
    verdicts = [v for v in watcher.step() if not v.get("skipped")]
    assert verdicts and verdicts[-1]["accuracy"] < 0.6 and verdicts[-1]["reference_version"] == version
    assert watcher.probation.rollback.swaps == [production]
    assert registry.get_alias("production") == production
    assert serving.swap(iris.config, production) == production


# -- regression ----------------------------------------------------------------------------
def test_regression_predict_feedback_and_monitor_error_test(diabetes):
    model = httpx.get(f"{diabetes.url}/model").json()
    assert model["task"] == "regression" and model["classes"] is None
    rows = diabetes.raw.iloc[:5]
    body = predict(diabetes, rows)
    assert body["probabilities"] is None and all(isinstance(v, float) for v in body["predictions"])
    features = rows.drop(columns=["id", "progression"]).reset_index(drop=True)
    assert np.allclose(body["predictions"], diabetes.model.predict(features))
    bad = feedback(diabetes, body["request_id"], [1.0, 2, "high", 3.0, 4.0])
    assert bad.status_code == 422 and bad.json()["field"] == "labels[2]", bad.text
    assert feedback(diabetes, body["request_id"], [1.0, 2, 3.5, 4.0, 5.0]).status_code == 200

    before = len(read_log(diabetes.storage))
    sent = send_all(diabetes, diabetes.raw.sample(n=200, random_state=0))
    frame = logged(diabetes, before + sent)
    watcher = monitor(diabetes)
    watcher.receive(frame)
    verdicts = [v for v in watcher.step() if not v.get("skipped")]
    assert verdicts, watcher.state
    window = verdicts[0]
    assert window["detectors"]["predictions"] is not None and window["detectors"]["accuracy"] is not None
    assert window["features"]["prediction"]["test"] == "ks"
    assert window["features"]["error"]["test"].startswith("mannwhitneyu")
    assert window["accuracy"] is None and 20 < window["mae"] < 80
