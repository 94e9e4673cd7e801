"""The inference API over real HTTP: endpoints, bad input, the logs, tokens, hot swap."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import wait_for
from serve_fixtures import Load, raw_instances, register_version, serve_config_for

from ray_mlops.data.online import featurize_instances
from ray_mlops.data.schema import feature_schema
from ray_mlops.errors import ServingError
from ray_mlops.serve import deploy as serving
from ray_mlops.contracts import FEEDBACK_DIR, read_log
from ray_mlops.serve.schemas import request_models

ID_RE = re.compile(r"^[0-9a-f]{32}\.\d+\.[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def app(served_model, serve_instance):  # noqa: F811
    config = serve_config_for(served_model, serve_instance, num_cpus=0.25, min_replicas=1, max_replicas=1,
                              max_instances=50, max_body_bytes=2_000_000, log_flush_interval_s=0.3)
    url = serving.deploy(config)
    return config, url


@pytest.fixture(scope="module")
def records(served_model):  # noqa: F811
    return raw_instances(served_model, 40, seed=1)


def predict(url: str, instances: list[dict], **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"instances": instances}, timeout=60, **kwargs)


def test_predict_feedback_health_model(app, records, served_model):  # noqa: F811
    config, url = app
    r = predict(url, records[:3])
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"predictions", "probabilities", "model_version", "request_id"}
    assert body["model_version"] == served_model.registry.resolve("production") == r.headers["x-model-version"]
    assert len(body["predictions"]) == 3 and set(body["predictions"]) <= {0, 1}
    assert np.allclose([sum(p) for p in body["probabilities"]], 1.0, atol=1e-4)
    assert ID_RE.match(body["request_id"])

    fb = httpx.post(f"{url}/feedback", json={"request_id": body["request_id"], "labels": [0, 1, 0]})
    assert fb.status_code == 200 and fb.json()["accepted"] == 3

    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["model_version"] == body["model_version"]
    model = httpx.get(f"{url}/model").json()
    assert model["model_version"] == body["model_version"]
    assert model["artifact"]["sha256"] == served_model.registry.metadata(body["model_version"])["artifact"]["sha256"]

    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/predict", "/feedback", "/health", "/model"} <= set(spec["paths"])
    instance = spec["components"]["schemas"]["Instance"]["properties"]
    assert {"age_years", "events", "notes", "images", "telemetry", "machine_id"} <= set(instance)


def test_served_predictions_equal_the_registered_pipeline_on_batch_features(app, records, served_model):  # noqa: F811
    config, url = app
    body = predict(url, records[:10]).json()
    model = served_model.registry.load(body["model_version"])
    instances = [{k: v for k, v in r.items() if k != "machine_id"} for r in records[:10]]
    expected = model.predict_proba(featurize_instances(config, instances, feature_schema(config)))
    assert np.allclose(body["probabilities"], expected, atol=1e-5)


def test_a_python_client_predicts_through_a_deployment_handle(app, records):
    """``predict_records`` answers as ``/predict`` does (same validation, predictions, log), without HTTP."""
    from ray import serve

    config, url = app
    handle = serve.get_app_handle(config.serve.app_name)
    answer = handle.predict_records.remote({"instances": records[:4]}).result(timeout_s=60)
    over_http = predict(url, records[:4]).json()
    assert answer["predictions"] == over_http["predictions"] and answer["model_version"] == over_http["model_version"]
    np.testing.assert_array_equal(answer["probabilities"], over_http["probabilities"])
    assert ID_RE.match(answer["request_id"]) and answer["request_id"] != over_http["request_id"]
    for body, where in (({"instances": [{**records[0], "age_years": "old"}]}, r"instances\[0\]\.age_years"),
                        ({"instances": [{**records[0], "load_class": "extreme"}]}, r"instances\[0\]\.load_class"),
                        ({"rows": []}, "instances")):
        with pytest.raises(Exception, match=where):
            handle.predict_records.remote(body).result(timeout_s=60)


def _bad_cases(records):
    good = records[0]
    return [
        ("malformed json", b'{"instances": [', 400, "body"),
        ("not an object", b"[1, 2]", 422, "body"),
        ("missing instances", {"rows": [good]}, 422, "instances"),
        ("extra top-level field", {"instances": [good], "x": 1}, 422, "x"),
        ("empty instances", {"instances": []}, 422, "instances"),
        ("too many instances", {"instances": [good] * 51}, 422, "instances"),
        ("wrong type", {"instances": [{**good, "age_years": "old"}]}, 422, "instances[0].age_years"),
        ("bool for float", {"instances": [{**good, "age_years": True}]}, 422, "instances[0].age_years"),
        ("NaN", b'{"instances": [%s]}' % json.dumps({**good, "age_years": float("nan")}).encode(), 422, "instances[0].age_years"),
        ("Infinity in telemetry", {"instances": [{**good, "telemetry": [{**good["telemetry"][0], "pressure": float("inf")}]}]},
         422, "instances[0].telemetry[0].pressure"),
        ("Infinity in an event", {"instances": [{**good, "events": [{"downtime_min": float("inf")}]}]}, 422, "instances[0].events"),
        ("missing field", {"instances": [{k: v for k, v in good.items() if k != "model"}]}, 422, "instances[0].model"),
        ("extra field", {"instances": [{**good, "colour": "red"}]}, 422, "instances[0].colour"),
        ("unknown level", {"instances": [{**good, "load_class": "extreme"}]}, 422, "instances[0].load_class"),
        ("out of range", {"instances": [{**good, "age_years": 500.0}]}, 422, "instances[0].age_years"),
        ("undecodable image", {"instances": [{**good, "images": ["bm90IGEgcG5n"]}]}, 422, "instances[0].images[0]"),
        ("image not base64", {"instances": [{**good, "images": ["%%%"]}]}, 422, "instances[0].images[0]"),
        ("event not an object", {"instances": [{**good, "events": [3]}]}, 422, "instances[0].events[0]"),
        ("second instance bad", {"instances": [good, {**good, "firmware": 1.5}]}, 422, "instances[1].firmware"),
    ]


def test_bad_inputs_are_4xx_naming_the_field(app, records):
    config, url = app
    for name, body, status, field in _bad_cases(records):
        if isinstance(body, bytes):
            r = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"})
        else:
            r = httpx.post(f"{url}/predict", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == status, (name, r.status_code, r.text)
        assert r.json()["field"] == field and field in r.json()["detail"], (name, r.text)


def test_oversized_body_and_bad_feedback(app, records):
    config, url = app
    r = httpx.post(f"{url}/predict", content=b"x" * 2_000_001, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"
    rid = predict(url, records[:2]).json()["request_id"]
    forged = rid[:-1] + ("0" if rid[-1] != "0" else "1")
    cases = [({"request_id": forged, "labels": [0, 1]}, 404, "request_id"),
             ({"request_id": "nope", "labels": [1]}, 404, "request_id"),
             ({"request_id": rid, "labels": [1]}, 422, "labels"),
             ({"request_id": rid, "labels": [0, "x"]}, 422, "labels[1]"),
             ({"request_id": rid}, 422, "labels")]
    for body, status, field in cases:
        r = httpx.post(f"{url}/feedback", json=body)
        assert (r.status_code, r.json()["field"]) == (status, field), (body, r.text)


def _json_values():
    scalars = st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=12)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                        max_leaves=6)


def _instances(config, good: dict):
    """Instances over the request schema: each field valid, absent, or any JSON value."""
    fields = list(request_models(config).instance_fields)
    value = {name: st.one_of(st.just(good.get(name)), _json_values()) for name in fields}
    return st.fixed_dictionaries({}, optional=value).flatmap(
        lambda d: st.one_of(st.just(d), st.dictionaries(st.text(max_size=8), _json_values(), max_size=2).map(lambda extra: {**d, **extra})))


@pytest.mark.slow
def test_property_no_input_yields_a_500(app, records):
    config, url = app
    bodies = st.one_of(
        st.fixed_dictionaries({"instances": st.lists(_instances(config, records[0]), min_size=0, max_size=3)}),
        _json_values(),
    )

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(body=bodies)
    def check(body):
        r = httpx.post(f"{url}/predict", content=json.dumps(body, allow_nan=True),
                       headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code in (200, 400, 422), r.text
        if r.status_code != 200:
            assert r.json()["field"], r.text

    check()


def test_prediction_log_holds_exactly_the_requests_sent(app, records, served_model):  # noqa: F811
    config, url = app
    sent = {}
    for i in range(6):
        batch = [{**r, "machine_id": f"LOG-{i}-{j}"} for j, r in enumerate(records[i:i + 1 + i % 3])]
        body = predict(url, batch).json()
        sent[body["request_id"]] = (batch, body)
        assert httpx.post(f"{url}/feedback", json={"request_id": body["request_id"],
                                                   "labels": [1] * len(batch)}).status_code == 200

    def logged():
        frame = read_log(served_model.storage)
        frame = frame[frame["entity"].fillna("").str.startswith("LOG-")]
        return [frame] if len(frame) >= sum(len(b) for b, _ in sent.values()) else None

    [frame] = wait_for(logged, timeout=30, message="prediction log flush")
    assert len(frame) == sum(len(b) for b, _ in sent.values())
    assert set(frame["request_id"]) == set(sent)
    for rid, (batch, body) in sent.items():
        rows = frame[frame["request_id"] == rid].sort_values("row")
        assert rows["row"].tolist() == list(range(len(batch)))
        assert rows["entity"].tolist() == [r["machine_id"] for r in batch]
        assert rows["prediction"].tolist() == body["predictions"]
        assert (rows["model_version"] == body["model_version"]).all()
    assert set(feature_schema(config).features) <= set(frame.columns)

    feedback = read_log(served_model.storage, FEEDBACK_DIR)
    joined = frame.merge(feedback, on=["request_id", "row"], how="left")
    assert joined["label"].notna().all()


@pytest.mark.slow  # deploys its own app (~11 s)
def test_bearer_token_guards_predict_and_feedback(served_model, records, serve_instance):  # noqa: F811
    from ray import serve

    config = serve_config_for(served_model, serve_instance, app_name="secure", route_prefix="/secure",
                              num_cpus=0.25, min_replicas=1, max_replicas=1, token="s3cret")
    url = serving.deploy(config)
    try:
        assert predict(url, records[:1]).status_code == 401
        assert predict(url, records[:1], headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{url}/feedback", json={}).status_code == 401
        ok = predict(url, records[:1], headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200, ok.text
        assert httpx.get(f"{url}/health").status_code == 200
    finally:
        serve.delete("secure")


@pytest.mark.slow  # fast lane budget: covered by the full suite
def test_hot_swap_under_load_and_a_failed_swap(app, records, served_model):  # noqa: F811
    config, url = app
    old = served_model.registry.resolve("production")
    new = register_version(served_model, C=0.05)
    with Load(url, records, clients=6) as load:
        wait_for(lambda: load.count() >= 10, timeout=60, message="load running")
        assert serving.swap(config, "production") == new
        seen = load.count()
        wait_for(lambda: load.count() >= seen + 20, timeout=60, message="requests after the swap")
    assert load.failures() == []
    versions = [v for _, v in load.results]
    assert set(versions) <= {old, new} and new in versions
    after = versions[seen + 6:]  # requests started after swap() returned (6 may have been in flight)
    assert after and set(after) == {new}

    broken = register_version(served_model, C=2.0, promote=False)
    served_model.storage.write_bytes(f"registry/{config.model_name}/{broken}/model.skops", b"tampered")
    with pytest.raises(ServingError, match="sha256"):
        serving.swap(config, broken)
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "degraded" and health["model_version"] == new
    assert health["last_swap_error"]["version"] == broken and "sha256" in health["last_swap_error"]["error"]
    assert predict(url, records[:1]).json()["model_version"] == new
    assert serving.status(config)["version"] == new
