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
            "ray-mlops status": json.dumps(loop.status(config), default=str),
            "registry events": json.dumps(served_model.registry.events(), default=str),
        }
        assert [where for where, text in places.items() if token in text] == []
        assert _files_containing(_session_logs(), token) == []
    finally:
        serve.delete("tokened")
