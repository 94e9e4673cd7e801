"""Regression in the monitor without Ray: real registry, real Monitor, records in the log format.

A ridge model on scikit-learn's diabetes data is production; a retraining promotes another
(lineage to production). In production its labels turn out noisier than on the rows it was
not fitted on (concept drift after the promotion): its windows' absolute errors are larger
than its own errors there, so probation rolls it back — the error test stands in for
accuracy on regression.
"""

from __future__ import annotations

import io
import uuid

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from monitor_fixtures import RecordingRollback

from ray_mlops.config import config_from_dict
from ray_mlops.data.schema import feature_schema
from ray_mlops.monitor.core import Monitor
from ray_mlops.contracts import FEEDBACK_DIR, parquet_bytes
from ray_mlops.registry import Registry
from ray_mlops.storage import Storage
from ray_mlops.train.pipelines import fit_pipeline, split_by_key

VALIDATION_FRACTION = 0.4


@pytest.fixture
def project(tmp_path):
    data = load_diabetes(as_frame=True, scaled=False)
    table = data.data.copy()
    table.columns = [f"x_{c}" for c in table.columns]
    table.insert(0, "id", [f"patient{i:03d}" for i in range(len(table))])
    table["progression"] = data.target.to_numpy(dtype=float)
    columns = {c: {"type": "float"} for c in table.columns if c != "id"}
    config = config_from_dict({
        "model_name": "diabetes", "storage": str(tmp_path / "store"),
        "data": {"root": str(tmp_path / "data"), "entity_key": "id", "label": "progression", "task": "regression",
                 "sources": [{"name": "table", "path": "table.csv", "format": "csv", "columns": columns}]},
        "monitor": {"window_size": 100, "min_window": 50, "min_labels": 30, "alpha": 0.05, "probation_windows": 2},
    })
    return config, Storage(config.storage), table


def register(config, storage, table: pd.DataFrame, *, parent=None, alpha=1.0) -> tuple[str, object]:
    schema = feature_schema(config)
    train, valid = split_by_key(table, "id", VALIDATION_FRACTION)
    model = fit_pipeline(schema, "ridge", {"alpha": alpha}, 0, train)
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    split = {"validation_fraction": VALIDATION_FRACTION, "key": "id", "key_hash": "sha1",
             "train_rows": len(train), "validation_rows": len(valid)}
    registry = Registry(storage, config.model_name)
    version = registry.register(model, params={"family": "ridge"}, metrics={"rmse": 55.0}, data_fingerprint="diabetes",
                                config_hash=config.digest(), profile_files={"reference.parquet": buffer.getvalue()},
                                parent=parent, extra={"split": split, **({"retrain": "r-test"} if parent else {})})
    registry.promote(version, reason="regression monitor test")
    return version, model


def records(rows: pd.DataFrame, model, version: str) -> pd.DataFrame:
    """Prediction records as the replicas log them (regression: no probabilities)."""
    frame = rows.drop(columns=["id", "progression"]).reset_index(drop=True)
    request = uuid.uuid4().hex
    out = frame.assign(request_id=[f"{request}-{i // 10}" for i in range(len(frame))],
                       row=[i % 10 for i in range(len(frame))], entity=rows["id"].to_numpy(), model_version=version,
                       prediction=model.predict(frame).astype(float), probabilities=None,
                       time=pd.Timestamp.now(tz="UTC"))
    return out


def write_feedback(storage, frame: pd.DataFrame, labels) -> None:
    labels = pd.DataFrame({"request_id": frame["request_id"], "row": frame["row"],
                           "label": np.asarray(labels, dtype=float), "time": pd.Timestamp.now(tz="UTC")})
    storage.write_bytes(f"{FEEDBACK_DIR}/date=2026-01-01/hour=00/{uuid.uuid4().hex}.parquet", parquet_bytes(labels))


def test_a_promoted_regression_version_with_larger_errors_is_rolled_back(project):
    config, storage, table = project
    first, good = register(config, storage, table)
    rollback = RecordingRollback(config, storage)
    monitor = Monitor(config, storage, rollback=rollback)
    monitor.step()
    assert monitor.tester.reference.version == first and monitor.tester.reference.accuracy is not None

    rows = table.sample(n=100, random_state=3)
    calm = records(rows, good, first)
    write_feedback(storage, calm, rows["progression"])
    monitor.receive(calm)
    (window,) = monitor.step()
    assert window["detectors"]["accuracy"] > 0.05 and 20 < window["mae"] < 80 and window["accuracy"] is None

    worse_version, worse = register(config, storage, table, parent=first, alpha=2.0)
    monitor.step()
    assert monitor.state.probation.active.version == worse_version
    rows = table.sample(n=100, random_state=4)
    bad = records(rows, worse, worse_version)
    noisy = rows["progression"] + np.random.default_rng(5).normal(0, 80, len(rows))
    write_feedback(storage, bad, noisy)
    monitor.receive(bad)
    (window,) = monitor.step()
    assert window["detectors"]["accuracy"] < 0.05 / 2 and window["mae"] > 60
    assert rollback.swaps == [first] and Registry(storage, config.model_name).get_alias("production") == first
    assert monitor.state.probation.history[-1].status == "rolled_back"
