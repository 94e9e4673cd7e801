"""A registered production model and prediction-record streams, for the monitor tests.

``monitored`` (session scope, no Ray: the sample data featurized by the online path,
the same code the batch ingest runs) splits the feature table by a hash of the machine id: half A is the version's reference profile (the model
is fitted on A's training split, so A's validation split is out-of-sample for it), half
B is production traffic from the same distribution. Each test gets its own storage with
that version registered and promoted (:func:`fresh_storage`).
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from serve_fixtures import fit_small_pipeline, plain_feature_table

VERSION_C = 1.0


@dataclass
class Monitored:
    config: object          # ray_mlops.config.Config (storage overridden per test)
    schema: object
    reference: pd.DataFrame  # half A: features + key + label
    traffic: pd.DataFrame    # half B
    model: object
    accuracy: float
    validation_rows: int


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def monitored(sample_config) -> Monitored:
    from ray_mlops.data.schema import feature_schema
    from ray_mlops.train.pipelines import key_fraction, split_by_key

    config = sample_config
    schema = feature_schema(config)
    table = plain_feature_table(config)
    in_a = table[schema.entity_key].map(lambda k: key_fraction(f"half:{k}")).to_numpy() < 0.5
    reference, traffic = table[in_a].reset_index(drop=True), table[~in_a].reset_index(drop=True)
    train, valid = split_by_key(reference, schema.entity_key, config.train.validation_fraction)
    model = fit_small_pipeline(train, schema, VERSION_C)
    accuracy = float((model.predict(valid[list(schema.features)]) == valid[schema.label]).mean())
    return Monitored(config, schema, reference, traffic, model, accuracy, len(valid))


def split_extra(monitored: Monitored) -> dict:
    """The split record a registration writes (how ``monitored.model`` was split)."""
    return {"validation_fraction": monitored.config.train.validation_fraction, "key": monitored.schema.entity_key,
            "key_hash": "sha1", "validation_rows": monitored.validation_rows}


def fresh_storage(monitored: Monitored, root, **monitor_overrides):
    """A new storage with the model registered and promoted; returns (config, storage, registry)."""
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage

    raw = monitored.config.model_dump(mode="json")
    raw["storage"] = str(root)
    raw["monitor"].update(monitor_overrides)
    from ray_mlops.config import Config

    config = Config.model_validate(raw)
    storage = Storage(config.storage)
    registry = Registry(storage, config.model_name)
    version = registry.register(
        monitored.model, params={"family": "logistic_regression", "C": VERSION_C},
        metrics={"roc_auc": 0.8, "accuracy": monitored.accuracy}, data_fingerprint="monitor-tests",
        config_hash=config.digest(), profile_files={"reference.parquet": _parquet(monitored.reference)},
        extra={"validation_rows": monitored.validation_rows, "split": split_extra(monitored)})
    registry.promote(version, reason="monitor tests")
    return config, storage, registry


def records(monitored: Monitored, rows: pd.DataFrame, version: str = "v1", *, request: str | None = None) -> pd.DataFrame:
    """Prediction records (the replicas' log format) for feature-table ``rows``."""
    schema = monitored.schema
    X = rows[list(schema.features)].reset_index(drop=True)
    proba = monitored.model.predict_proba(X)
    frame = X.copy()
    request = request or uuid.uuid4().hex
    frame["request_id"] = [f"{request}-{i // 8}" for i in range(len(X))]
    frame["row"] = [i % 8 for i in range(len(X))]
    frame["entity"] = rows[schema.entity_key].astype(str).to_numpy()
    frame["model_version"] = version
    frame["prediction"] = proba.argmax(axis=1).astype(int)
    frame["probabilities"] = [list(map(float, p)) for p in proba.round(6)]
    frame["time"] = pd.Timestamp.now(tz="UTC")
    return frame


def feedback(frame: pd.DataFrame, labels) -> pd.DataFrame:
    """Feedback rows (the feedback log's format) for prediction records ``frame``."""
    return pd.DataFrame({"request_id": frame["request_id"].to_numpy(), "row": frame["row"].to_numpy(),
                         "label": np.asarray(labels, dtype=int), "time": pd.Timestamp.now(tz="UTC")})


def shifted(monitored: Monitored, rows: pd.DataFrame) -> pd.DataFrame:
    """Covariate drift: older machines, hotter telemetry."""
    out = rows.copy()
    out["age_years"] = out["age_years"] * 1.8 + 3
    for column in [c for c in out.columns if c.startswith("telemetry__temperature")]:
        out[column] = out[column] + 2 * out[column].std()
    return out


def stream(monitor, frames) -> list[dict]:
    """Hand each frame to ``monitor`` and step it; the verdicts of every window tested."""
    verdicts = []
    for frame in frames:
        monitor.receive(frame)
        verdicts += monitor.step()
    return verdicts


class RecordingLauncher:
    """A launcher that records launches; ``result`` is returned by ``poll`` once set."""

    def __init__(self):
        self.launched: list = []  # the RetrainJob of each launch
        self.polls = 0
        self.result: dict | None = None

    def launch(self, job) -> None:
        self.launched.append(job)

    def poll(self, job) -> dict | None:
        self.polls += 1
        return None if self.result is None else {"id": job.id, **self.result}


def promote_retrained(monitored: Monitored, storage, registry, *, retrain: str = "r-test") -> str:
    """Register and promote what a retraining would: same model and claims, lineage to production."""
    parent = registry.get_alias("production")
    version = registry.register(
        monitored.model, params={"family": "logistic_regression", "C": VERSION_C},
        metrics={"roc_auc": 0.8, "accuracy": monitored.accuracy}, data_fingerprint="monitor-tests",
        config_hash="retrained", profile_files={"reference.parquet": _parquet(monitored.reference)},
        parent=parent, extra={"validation_rows": monitored.validation_rows, "split": split_extra(monitored),
                              "retrain": retrain})
    registry.promote(version, reason=f"retraining {retrain}")
    return version


def write_feedback(storage, frame: pd.DataFrame, labels, name: str | None = None) -> None:
    """Labels for prediction records, as ``/feedback`` writes them."""
    from ray_mlops.contracts import FEEDBACK_DIR, parquet_bytes

    name = name or uuid.uuid4().hex
    storage.write_bytes(f"{FEEDBACK_DIR}/date=2026-01-01/hour=00/{name}.parquet", parquet_bytes(feedback(frame, labels)))


class RecordingRollback:
    """The real rollback action (registry + swap) with a recording swap; ``fail_swap`` breaks it."""

    def __init__(self, config, storage, *, fail_swap: bool = False):
        self.config, self.storage, self.fail_swap = config, storage, fail_swap
        self.plans: list[dict] = []
        self.swaps: list[str] = []

    def swap(self, config, version: str) -> str:
        self.swaps.append(version)
        if self.fail_swap:
            raise RuntimeError(f"replicas cannot load {version}")
        return version

    def __call__(self, plan: dict) -> dict:
        from ray_mlops.monitor.probation import roll_back

        self.plans.append(plan)
        return roll_back(self.config, self.storage, plan, swap=self.swap)
