"""A shadow version over real Serve and HTTP: predicted beside production on the same rows,
logged, never answered; its faults never reach a client."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from helpers import wait_for
from serve_fixtures import Load, fit_small_pipeline, raw_instances, reference_bytes, register_version, serve_config_for

from ray_mlops.contracts import SHADOW_COLUMNS, read_log, record_keys
from ray_mlops.data.schema import feature_schema
from ray_mlops.errors import ServingError
from ray_mlops.serve import deploy as serving

pytestmark = pytest.mark.slow  # each deploys a Serve app (~10 s): the full suite runs them, the fast lane keeps test_serve_api

APP = "shadowed"


@pytest.fixture(scope="module")
def app(served_model, serve_instance):  # noqa: F811
    from ray import serve

    config = serve_config_for(served_model, serve_instance, num_cpus=0.25, min_replicas=1, max_replicas=1,
                              log_flush_interval_s=0.3, app_name=APP, route_prefix="/shadowed")
    url = serving.deploy(config)
    yield config, url
    serve.delete(APP)


@pytest.fixture(scope="module")
def records(served_model):  # noqa: F811
    return raw_instances(served_model, 40, seed=7)


def predict(url: str, instances: list[dict]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"instances": instances}, timeout=60)


def logged(served, request_ids: set[str]):
    """The logged rows of ``request_ids`` (waits until every one is flushed)."""
    def rows():
        log = read_log(served.storage)
        return log[log["request_id"].isin(request_ids)] if len(log) else log

    wait_for(lambda: rows()["request_id"].nunique() == len(request_ids), timeout=30, message="logged rows")
    return rows()


def flaky_version(served) -> str:
    """A version that loads (its warm-up is 64 rows) and raises on any batch of exactly 3 rows."""
    from user_estimators import FailsOnRows

    schema = feature_schema(served.config)
    pipeline = fit_small_pipeline(served.table, schema)
    pipeline.steps[-1] = ("model", FailsOnRows(fail_rows=3))
    pipeline.fit(served.table[list(schema.features)], served.table[schema.label].astype(int))
    return served.registry.register(
        pipeline, params={"family": "flaky"}, metrics={"roc_auc": 0.8}, data_fingerprint="serve-tests",
        config_hash=served.config.digest(), trusted_types=["user_estimators.FailsOnRows"],
        profile_files={"reference.parquet": reference_bytes(served.table, schema)})


def test_the_shadow_predicts_the_same_rows_and_only_production_answers(app, records, served_model):  # noqa: F811
    config, url = app
    production = serving.status(config)["version"]
    candidate = register_version(served_model, C=0.02, promote=False)
    assert serving.set_shadow(config, candidate) == candidate
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["shadow"]["version"] == candidate
    assert serving.status(config)["shadow"] == candidate

    bodies = [predict(url, records[i:i + 4]).json() for i in range(0, 20, 4)]
    assert {b["model_version"] for b in bodies} == {production}
    rows = logged(served_model, {b["request_id"] for b in bodies}).sort_values(["request_id", "row"])
    assert set(SHADOW_COLUMNS) <= set(rows.columns)
    assert set(rows["model_version"]) == {production} and set(rows["shadow_version"]) == {candidate}
    features = rows[list(feature_schema(config).features)]
    for version, column in ((production, "probabilities"), (candidate, "shadow_probabilities")):
        expected = served_model.registry.load(version).predict_proba(features)
        assert np.allclose(np.stack(rows[column].to_numpy()), expected, atol=1e-5)
    answered = {f"{b['request_id']}:{i}": p for b in bodies for i, p in enumerate(b["probabilities"])}
    assert np.allclose(np.stack(rows["probabilities"].to_numpy()),
                       [answered[k] for k in record_keys(rows)], atol=1e-6)  # the answer is production's

    assert serving.set_shadow(config, None) is None
    assert httpx.get(f"{url}/health").json()["shadow"]["version"] is None
    body = predict(url, records[:2]).json()
    after = logged(served_model, {body["request_id"]})
    assert after["shadow_version"].isna().all()


def test_a_shadow_that_fails_to_load_or_raises_never_fails_a_request(app, records, served_model):  # noqa: F811
    config, url = app
    production = serving.status(config)["version"]
    broken = register_version(served_model, C=3.0, promote=False)
    served_model.storage.write_bytes(f"registry/{config.model_name}/{broken}/model.skops", b"tampered")
    with pytest.raises(ServingError, match="sha256"):
        serving.set_shadow(config, broken)
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "degraded" and health["model_version"] == production
    assert health["shadow"]["version"] is None and health["shadow"]["error"]["version"] == broken
    assert predict(url, records[:2]).status_code == 200

    flaky = flaky_version(served_model)
    assert serving.set_shadow(config, flaky) == flaky
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    three, four = predict(url, records[:3]), predict(url, records[3:7])  # the shadow raises on 3 rows only
    assert three.status_code == four.status_code == 200
    assert three.json()["model_version"] == four.json()["model_version"] == production
    rows = logged(served_model, {three.json()["request_id"], four.json()["request_id"]})
    by_request = rows.groupby("request_id")["shadow_version"]
    assert by_request.apply(lambda s: s.isna().all())[three.json()["request_id"]]  # dropped from that batch
    assert (by_request.apply(lambda s: (s == flaky).all()))[four.json()["request_id"]]
    assert httpx.get(f"{url}/health").json()["shadow"]["failed_batches"] >= 1
    serving.set_shadow(config, None)


@pytest.mark.slow
def test_no_request_fails_across_shadow_load_promotion_and_discard(app, records, served_model):  # noqa: F811
    config, url = app
    promoted = register_version(served_model, C=0.3, promote=False)
    discarded = register_version(served_model, C=5.0, promote=False)
    with Load(url, records, clients=4) as load:
        wait_for(lambda: load.count() >= 10, timeout=60, message="load running")
        serving.set_shadow(config, promoted)
        served_model.registry.promote(promoted, reason="shadow test: promotion")
        assert serving.swap(config, promoted) == promoted  # the shadow becomes production
        serving.set_shadow(config, discarded)
        serving.set_shadow(config, None)  # discarded
        seen = load.count()
        wait_for(lambda: load.count() >= seen + 10, timeout=60, message="requests after the discard")
    assert load.failures() == []
    assert promoted in {v for _, v in load.results}
    health = httpx.get(f"{url}/health").json()
    assert health["model_version"] == promoted and health["shadow"]["version"] is None


@pytest.mark.slow
def test_a_canary_share_of_requests_gets_the_shadow_answer_logged_as_such(served_model, serve_instance, records):  # noqa: F811
    from ray import serve

    from ray_mlops.serve.shadow import canary_share

    config = serve_config_for(served_model, serve_instance, num_cpus=0.25, min_replicas=1, max_replicas=1,
                              log_flush_interval_s=0.3, app_name="canaried", route_prefix="/canaried",
                              canary_fraction=0.5)
    url = serving.deploy(config)
    try:
        production = serving.status(config)["version"]
        candidate = register_version(served_model, C=0.07, promote=False)
        serving.set_shadow(config, candidate)
        bodies = [predict(url, records[i:i + 2]).json() for i in range(0, 40, 2)]
        canaries = {b["request_id"] for b in bodies if canary_share(b["request_id"]) < 0.5}
        assert 0 < len(canaries) < len(bodies)
        assert all(b["model_version"] == (candidate if b["request_id"] in canaries else production) for b in bodies)
        rows = logged(served_model, {b["request_id"] for b in bodies})
        rows = rows.assign(canary=rows["canary"].astype(bool))
        assert set(rows["model_version"]) == {production} and set(rows["shadow_version"]) == {candidate}
        assert (rows["canary"] == rows["request_id"].isin(canaries)).all()
        answered = {f"{b['request_id']}:{i}": p for b in bodies for i, p in enumerate(b["probabilities"])}
        for column, which in (("shadow_probabilities", rows["canary"]), ("probabilities", ~rows["canary"])):
            part = rows[which.to_numpy()]
            assert np.allclose(np.stack(part[column].to_numpy()), [answered[k] for k in record_keys(part)], atol=1e-6)
    finally:
        serve.delete("canaried")
