"""Secrets and failures at the HTTP boundary, over real Serve and real storage.

- the bearer token never leaves the driver in plaintext: not in the Serve application's
  arguments, an exported Serve config, Serve's logs, the registry events or `status`;
- a package error on the HTTP path is a 4xx naming the field or a 503 with
  ``Retry-After``, never a 500 (storage made to fail under ``/feedback`` and under the
  prediction log), and nothing acknowledged is lost.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from serve_fixtures import raw_instances, serve_config_for

from ray_mlops import loop
from ray_mlops.serve import deploy as serving

pytestmark = pytest.mark.slow  # own apps and a storage outage (~30 s); test_serve_api keeps the Serve smoke in the fast lane


@pytest.fixture(scope="module")
def records(served_model):  # noqa: F811
    return raw_instances(served_model, 20, seed=5)


def _session_logs() -> Path:
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path())


def _files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


def test_the_bearer_token_never_appears_outside_the_driver(served_model, records, serve_instance):  # noqa: F811
    from ray import serve

    token = f"tok-{uuid.uuid4().hex}"
    config = serve_config_for(served_model, serve_instance, app_name="tokened", route_prefix="/tokened",
                              num_cpus=0.25, min_replicas=1, max_replicas=1, token=token)
    url = serving.deploy(config)
    try:
        wrong = httpx.post(f"{url}/predict", json={"instances": records[:1]}, headers={"authorization": "Bearer x"})
        assert wrong.status_code == 401 and token not in wrong.text
        ok = httpx.post(f"{url}/predict", json={"instances": records[:1]},
                        headers={"authorization": f"Bearer {token}"}, timeout=60)
        assert ok.status_code == 200, ok.text
        places = {
            "serve details (dashboard, `serve status`)": json.dumps(serving._client().get_serve_details(), default=str),
            "exported serve config": yaml.safe_dump(serving.serve_config(config)),
            "ray-mlops status": json.dumps(loop.status(config).to_json(), default=str),
            "registry events": json.dumps(served_model.registry.events(), default=str),
        }
        assert [where for where, text in places.items() if token in text] == []
        assert _files_containing(_session_logs(), token) == []
    finally:
        serve.delete("tokened")


# -- storage down under /feedback and under the prediction log ----------------------------
class Outage:
    """Make one folder of a local storage fail for real: a plain file takes its place."""

    def __init__(self, root: Path, folder: str):
        self.path, self.aside = root / folder, root / f"{folder}.aside"

    def __enter__(self) -> "Outage":
        if self.path.exists():
            self.path.rename(self.aside)
        self.path.write_text("storage outage")  # every write below it now fails
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink()
        if self.aside.exists():
            self.aside.rename(self.path)


@pytest.fixture(scope="module")
def own_store(served_model, serve_instance, tmp_path_factory):  # noqa: F811
    """The served model's registry copied to a storage of its own (this module breaks storage)."""
    import shutil

    from ray import serve

    root = tmp_path_factory.mktemp("outage") / "store"
    shutil.copytree(Path(served_model.storage.root) / "registry", root / "registry")
    config = serve_config_for(served_model, serve_instance, app_name="outage", route_prefix="/outage",
                              num_cpus=0.25, min_replicas=1, max_replicas=1, log_flush_interval_s=0.2)
    config = config.model_copy(update={"storage": str(root)})
    url = serving.deploy(config)
    yield config, root, url
    serve.delete("outage")


def _predict(url: str, instances: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"instances": instances}, timeout=60)


def test_storage_down_under_feedback_is_a_503_and_nothing_acknowledged_is_lost(own_store, records):
    from ray_mlops.serve.predlog import FEEDBACK_DIR, read_log
    from ray_mlops.storage import Storage

    config, root, url = own_store
    bodies = [_predict(url, records[i:i + 2]).json() for i in range(0, 8, 2)]
    acknowledged = {}
    first = httpx.post(f"{url}/feedback", json={"request_id": bodies[0]["request_id"], "labels": [0, 1]})
    assert first.status_code == 200
    acknowledged[bodies[0]["request_id"]] = [0, 1]
    with Outage(root, FEEDBACK_DIR):
        for body in bodies[1:]:
            down = httpx.post(f"{url}/feedback", json={"request_id": body["request_id"], "labels": [1, 0]})
            assert down.status_code == 503, down.text
            assert int(down.headers["retry-after"]) > 0
            assert down.json()["field"] == "storage" and str(root) not in down.text
    for body in bodies[1:]:  # the client retries after the outage
        again = httpx.post(f"{url}/feedback", json={"request_id": body["request_id"], "labels": [1, 0]})
        assert again.status_code == 200, again.text
        acknowledged[body["request_id"]] = [1, 0]
    logged = read_log(Storage(str(root)), FEEDBACK_DIR)  # written before the 200 was sent
    got = {rid: rows.sort_values("row")["label"].tolist() for rid, rows in logged.groupby("request_id")}
    assert got == acknowledged


def test_storage_down_under_the_prediction_log_keeps_answering_and_loses_no_row(own_store, records):
    from helpers import wait_for
    from ray_mlops.serve.predlog import PREDICTIONS_DIR, read_log
    from ray_mlops.storage import Storage

    config, root, url = own_store
    with Outage(root, PREDICTIONS_DIR):
        answered = [_predict(url, records[i:i + 3]) for i in range(0, 12, 3)]
        assert [r.status_code for r in answered] == [200] * 4
        health = wait_for(lambda: (lambda h: h if h["prediction_log"]["write_errors"] else None)(
            httpx.get(f"{url}/health").json()), timeout=30, message="a failed log write")
        assert health["status"] in ("ok", "degraded")
    ids = {r.json()["request_id"] for r in answered}

    def logged() -> bool:
        return ids <= set(read_log(Storage(str(root)), PREDICTIONS_DIR)["request_id"])

    wait_for(logged, timeout=30, message="the buffered rows flushed after the outage")
    frame = read_log(Storage(str(root)), PREDICTIONS_DIR)
    assert len(frame[frame["request_id"].isin(ids)]) == 12
