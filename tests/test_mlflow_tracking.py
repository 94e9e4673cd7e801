"""Optional MLflow tracking against a real ``mlflow server`` (loopback, SQLite backend).

The runs and model versions are read back through ``MlflowClient``. With MLflow down,
training and registration carry on: each failed call is a warning and a counted failure.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import free_port, wait_for
from train_fixtures import make_table, tiny_config

pytestmark = pytest.mark.slow


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server and its workers (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 with a SQLite store; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
        try:
            return httpx.get(f"{uri}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=120, interval=0.5, message="mlflow server")
        yield uri
    finally:
        _stop(proc)
        log.close()


def _with_tracking(config, uri: str, **changes):
    tracking = config.tracking.model_copy(update={"mlflow_uri": uri})
    return config.model_copy(update={"tracking": tracking, **changes})


def test_off_by_default():
    from ray_mlops.config import load_config
    from ray_mlops.tracking import log_registration, tune_callbacks

    config = load_config()
    assert config.tracking.mlflow_uri is None and tune_callbacks(config) == []
    assert log_registration(config, {"version": "v1"}, promoted=True, reason="", search_name="s") is None


def test_trials_and_the_registered_version_are_in_mlflow(sample_ingest, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from ray_mlops.data.ingest import ingest
    from ray_mlops.pipeline import train_and_promote
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage
    from ray_mlops.tracking import TRIAL_TAG, VERSION_TAG, log_registration

    base, _, _ = sample_ingest
    config = _with_tracking(base, mlflow_server, storage=str(tmp_path / "store"), train=tiny_config(num_samples=3))
    storage = Storage(config.storage)
    ingest(config, storage)
    outcome = train_and_promote(config, storage)

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(f"{config.project}/{outcome.search.name}")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` != ''")
    trials = outcome.search.trials.set_index("trial_id")
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(trials.index)
    for run in runs:
        trial = trials.loc[run.data.tags[TRIAL_TAG]]
        assert run.info.status == "FINISHED"
        assert run.data.params["family"] == run.data.tags["family"] == trial["family"]
        assert {k: str(v) for k, v in trial["params"].items()}.items() <= run.data.params.items()
        assert run.data.metrics["roc_auc"] == pytest.approx(trial["roc_auc"])

    metadata = Registry(storage, config.model_name).metadata(outcome.version)
    (version,) = client.search_model_versions(f"name = '{config.model_name}'")
    assert version.tags[VERSION_TAG] == outcome.version
    assert version.tags["ray_mlops.sha256"] == metadata["artifact"]["sha256"]
    assert version.tags["ray_mlops.gate"] == ("promoted" if outcome.decision.promoted else "rejected")
    assert version.tags["ray_mlops.data_fingerprint"] == outcome.ingest.fingerprint
    registration = client.get_run(version.run_id)
    assert registration.data.params["family"] == outcome.search.family
    assert registration.data.metrics["roc_auc"] == pytest.approx(metadata["metrics"]["roc_auc"])
    logged = client.download_artifacts(version.run_id, "ray_mlops/metadata.json", str(tmp_path))
    assert Path(logged).read_text().count(metadata["artifact"]["sha256"]) == 1

    again = log_registration(config, metadata, promoted=outcome.decision.promoted, reason="re-run",
                             search_name=outcome.search.name)  # idempotent: no second model version
    assert again == version.version and len(client.search_model_versions(f"name = '{config.model_name}'")) == 1


def test_mlflow_down_is_a_counted_warning_and_nothing_breaks(ray_session, tmp_path, caplog):
    from ray_mlops.config import load_config
    from ray_mlops.storage import Storage
    from ray_mlops.tracking import log_registration, tune_callbacks
    from ray_mlops.train.search import run_search

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = _with_tracking(load_config(overrides={"storage": str(tmp_path)}), down)
    frame, schema = make_table(240, seed=3)
    callbacks = tune_callbacks(config)
    with caplog.at_level(logging.WARNING, logger="ray_mlops.tracking"):
        result = run_search(frame, schema, tiny_config(num_samples=2), Storage(str(tmp_path)), callbacks=callbacks)
        assert log_registration(config, {"version": "v1", "params": {}, "metrics": {}}, promoted=False,
                                reason="", search_name=result.name) is None
    assert len(result.trials) == 2 and (result.trials["status"] == "ok").all()
    (callback,) = callbacks
    assert callback.tracker.failures == 2  # one per trial
    warnings = [r for r in caplog.records if "MLflow tracking" in r.getMessage()]
    assert len(warnings) == 3 and all(down in r.getMessage() for r in warnings)


def test_a_monitor_retraining_is_logged_like_batch_training(sample_ingest, mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    from ray_mlops.monitor.retrain import retrain
    from ray_mlops.registry import Registry
    from ray_mlops.storage import Storage
    from ray_mlops.tracking import TRIAL_TAG, VERSION_TAG

    base, _, _ = sample_ingest
    config = _with_tracking(base, mlflow_server, storage=str(tmp_path / "store"), train=tiny_config(num_samples=2),
                            model_name="retrained")  # the server is shared with the test above: its own model
    storage = Storage(config.storage)
    outcome = retrain(config, storage, {"id": "r1", "onset": None, "trigger_window": 4})
    assert outcome["status"] in ("promoted", "rejected"), outcome

    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name(f"{config.project}/retrain-r1")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` != ''")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    (version,) = client.search_model_versions(f"name = '{config.model_name}'")
    metadata = Registry(storage, config.model_name).metadata(outcome["version"])
    assert version.tags[VERSION_TAG] == outcome["version"]
    assert version.tags["ray_mlops.sha256"] == metadata["artifact"]["sha256"]
    assert version.tags["ray_mlops.gate"] == outcome["status"]
    assert version.tags["ray_mlops.retrain"] == "r1" and version.tags["ray_mlops.trigger_window"] == "4"
    assert version.tags["ray_mlops.data_fingerprint"] == outcome["fingerprint"]
