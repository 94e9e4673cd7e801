"""Registry: round-trip, lineage, integrity, immutability, aliases, events, rollback.

Every storage-facing test runs on a local folder and on a real S3-compatible server
(moto in server mode on loopback) through the ``storage`` fixture.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np
import pyarrow.fs as pafs
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer

from helpers import free_port
from registry_fixtures import CATEGORICAL, NUMERIC, REGISTER_ARGS, fit_pipeline, make_table, storage  # noqa: F401
from ray_mlops.errors import (
    IntegrityError,
    RegistryError,
    StorageError,
    VersionExistsError,
    VersionNotFoundError,
)
from ray_mlops.registry import Registry, trusted_types
from ray_mlops.storage import Storage

FRAME = make_table(300)
X = FRAME[NUMERIC + CATEGORICAL]


def tiny_model() -> Pipeline:
    return make_pipeline(DummyClassifier(strategy="prior")).fit(np.zeros((4, 1)), [0, 1, 1, 0])


def _not_sklearn(values):  # a function skops must flag and the registry must refuse
    return values


@pytest.fixture(scope="module")
def models():
    return {family: fit_pipeline(FRAME, family) for family in ("logreg", "hgb", "forest")}


# -- round trip and lineage ---------------------------------------------------------------
@pytest.mark.parametrize("family", ["logreg", "hgb", "forest"])
def test_every_family_round_trips_through_skops(tmp_path, models, family):
    registry = Registry(Storage(str(tmp_path)), "failures")
    version = registry.register(models[family], **REGISTER_ARGS)
    loaded = registry.load(version)
    assert isinstance(loaded, Pipeline)
    np.testing.assert_array_equal(loaded.predict_proba(X), models[family].predict_proba(X))
    unseen = X.head(5).assign(model="Z999")  # unknown category levels are tolerated
    assert loaded.predict_proba(unseen).shape == (5, 2)


def test_register_records_full_lineage(storage, models):
    registry = Registry(storage, "failures")
    first = registry.register(models["logreg"], **REGISTER_ARGS)
    profile = {"profile.json": b'{"temp": {"mean": 60}}', "reference.parquet": b"PAR1...PAR1"}
    second = registry.register(
        models["hgb"], params={"max_iter": 30}, metrics={"roc_auc": 0.91, "log_loss": 0.3},
        data_fingerprint="fp-2", config_hash="cfg-2", profile_files=profile, parent=first,
        extra={"trial": "t-7"},
    )
    assert (first, second) == ("v1", "v2")
    meta = registry.metadata(second)
    assert meta["version"] == "v2" and meta["model_name"] == "failures" and meta["parent"] == "v1"
    assert meta["params"] == {"max_iter": 30} and meta["metrics"]["roc_auc"] == 0.91
    assert (meta["data_fingerprint"], meta["config_hash"], meta["extra"]) == ("fp-2", "cfg-2", {"trial": "t-7"})
    assert {"sklearn", "numpy", "pandas", "pyarrow", "ray", "python", "skops"} <= set(meta["packages"])
    assert all(meta["packages"][k] for k in ("sklearn", "numpy", "pandas", "pyarrow", "ray", "python"))
    assert meta["git_commit"] is None or len(meta["git_commit"]) == 40
    assert meta["created"].endswith("+00:00")
    artifact = storage.read_bytes(f"registry/failures/v2/{meta['artifact']['file']}")
    assert meta["artifact"]["sha256"] == hashlib.sha256(artifact).hexdigest()
    assert meta["artifact"]["format"] == "skops"
    assert registry.read_profile_file("v2", "profile.json") == profile["profile.json"]
    assert registry.read_profile_file("v2", "reference.parquet") == profile["reference.parquet"]
    with pytest.raises(VersionNotFoundError, match="missing.json"):
        registry.read_profile_file("v2", "missing.json")


def test_versions_are_sorted_by_number(tmp_path):
    registry = Registry(Storage(str(tmp_path)), "m")
    for name in ("v10", "v2", "v1"):
        registry.register(tiny_model(), version=name, **REGISTER_ARGS)
    assert [v["version"] for v in registry.versions()] == ["v1", "v2", "v10"]
    assert registry.register(tiny_model(), **REGISTER_ARGS) == "v11"
    assert registry.latest() == "v11"


def test_empty_registry(storage):
    registry = Registry(storage, "nothing-yet")
    assert registry.versions() == [] and registry.latest() is None and registry.events() == []
    assert registry.aliases() == {"production": None, "candidate": None}


# -- integrity -----------------------------------------------------------------------------
def _flip_a_byte(storage: Storage, rel: str) -> None:
    data = bytearray(storage.read_bytes(rel))
    data[len(data) // 2] ^= 0x01
    storage.write_bytes(rel, bytes(data))


def test_tampered_artifact_is_never_loaded(storage, models):
    registry = Registry(storage, "failures")
    version = registry.register(models["logreg"], **REGISTER_ARGS, profile_files={"profile.json": b"{}"})
    _flip_a_byte(storage, f"registry/failures/{version}/model.skops")
    with pytest.raises(IntegrityError, match="sha256"):
        registry.load(version)
    _flip_a_byte(storage, f"registry/failures/{version}/profile/profile.json")
    with pytest.raises(IntegrityError, match="profile.json"):
        registry.read_profile_file(version, "profile.json")


def test_artifacts_with_unaudited_types_are_refused(tmp_path):
    registry = Registry(Storage(str(tmp_path)), "m")
    model = make_pipeline(FunctionTransformer(_not_sklearn), DummyClassifier()).fit(np.zeros((4, 1)), [0, 1, 1, 0])
    with pytest.raises(IntegrityError, match="_not_sklearn"):
        registry.register(model, **REGISTER_ARGS)
    assert registry.versions() == [] and registry.events() == []


def test_trusted_types_are_the_audited_sklearn_ones(models):
    import skops.io as sio

    audited = set()
    for model in models.values():
        audited |= set(trusted_types(sio.dumps(model)))
    assert audited <= {"numpy.dtype", "sklearn.tree._tree.Tree",
                       "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}
    with pytest.raises(IntegrityError, match="not a readable skops file"):
        trusted_types(b"definitely not a zip file")


def _user_model():
    """A Pipeline around a user's own estimator whose fitted state holds another user type."""
    from user_estimators import SoftCentroidClassifier

    return make_pipeline(SoftCentroidClassifier()).fit(X[NUMERIC].fillna(0).to_numpy(), FRAME["failed"].to_numpy())


USER_TYPES = ["user_estimators.CentroidCounts", "user_estimators.SoftCentroidClassifier"]


def test_declared_types_are_trusted_recorded_and_reused_on_load(storage):
    registry = Registry(storage, "m")
    model = _user_model()
    version = registry.register(model, **REGISTER_ARGS, trusted_types=list(reversed(USER_TYPES)))
    meta = registry.metadata(version)
    assert meta["artifact"]["declared_types"] == USER_TYPES
    assert set(USER_TYPES) <= set(meta["artifact"]["trusted_types"])
    assert meta["classes"] == [0, 1]
    loaded = registry.load(version)
    data = X[NUMERIC].fillna(0).to_numpy()
    assert np.array_equal(loaded.predict_proba(data), model.predict_proba(data))


@pytest.mark.parametrize("declared", [[], ["user_estimators.SoftCentroidClassifier"]])
def test_an_undeclared_user_type_is_refused_naming_what_to_declare_where(tmp_path, declared):
    registry = Registry(Storage(str(tmp_path)), "m")
    with pytest.raises(IntegrityError) as caught:
        registry.register(_user_model(), **REGISTER_ARGS, trusted_types=declared)
    message = str(caught.value)
    assert "user_estimators.CentroidCounts" in message and "train.families.<family>.trusted_types" in message
    assert ("user_estimators.SoftCentroidClassifier" in message) == (not declared)
    assert registry.versions() == [] and registry.events() == []
    with pytest.raises(RegistryError, match="dotted type names"):
        registry.register(_user_model(), **REGISTER_ARGS, trusted_types="user_estimators.CentroidCounts")


def test_a_declaration_does_not_outlive_its_version(tmp_path):
    registry = Registry(Storage(str(tmp_path)), "m")
    version = registry.register(_user_model(), **REGISTER_ARGS, trusted_types=USER_TYPES)
    meta_path = tmp_path / f"registry/m/{version}/metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["artifact"]["declared_types"] = []  # what a version registered without declarations holds
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(IntegrityError, match="user_estimators.CentroidCounts"):
        registry.load(version)


# -- immutability, validation, partial writes ----------------------------------------------
def test_versions_are_immutable(storage):
    registry = Registry(storage, "m")
    registry.register(tiny_model(), version="v1", **REGISTER_ARGS)
    before = registry.metadata("v1")
    with pytest.raises(VersionExistsError, match="v1"):
        registry.register(tiny_model(), version="v1", **{**REGISTER_ARGS, "data_fingerprint": "other"})
    assert registry.metadata("v1") == before
    assert [e["kind"] for e in registry.events()] == ["register"]


@pytest.mark.parametrize("ref", ["../v1", "v0", "v01", "V1", "1", "v1/../v2", "", "production/x", "staging"])
def test_invalid_refs_are_not_found_and_named(tmp_path, ref):
    registry = Registry(Storage(str(tmp_path)), "m")
    registry.register(tiny_model(), **REGISTER_ARGS)
    with pytest.raises(VersionNotFoundError, match=repr(ref).replace("\\", "\\\\").replace(".", r"\.")):
        registry.load(ref)


def test_invalid_names_are_refused(tmp_path):
    store = Storage(str(tmp_path))
    for bad in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(RegistryError, match="model name"):
            Registry(store, bad)
    registry = Registry(store, "m")
    with pytest.raises(RegistryError, match="version name"):
        registry.register(tiny_model(), version="../v1", **REGISTER_ARGS)
    with pytest.raises(RegistryError, match="profile file name"):
        registry.register(tiny_model(), profile_files={"../../x": b""}, **REGISTER_ARGS)
    registry.register(tiny_model(), **REGISTER_ARGS)
    with pytest.raises(RegistryError, match="unknown alias 'staging'"):
        registry.set_alias("staging", "v1")
    with pytest.raises(VersionNotFoundError, match="v7"):
        registry.set_alias("candidate", "v7")
    with pytest.raises(VersionNotFoundError, match="'v9'"):
        registry.register(tiny_model(), parent="v9", **REGISTER_ARGS)
    with pytest.raises(VersionNotFoundError, match="alias 'production'"):
        registry.resolve("production")
    assert [v["version"] for v in registry.versions()] == ["v1"]
    assert not os.path.exists(tmp_path / "escape") and not os.path.exists(tmp_path / "x")


def test_a_failed_register_leaves_nothing(storage):
    registry = Registry(storage, "m")
    with pytest.raises(Exception):
        registry.register(tiny_model(), profile_files={"broken.bin": object()}, **REGISTER_ARGS)
    assert registry.versions() == [] and registry.events() == []
    assert storage.list("registry/m") in ([], ["v1"]) and not storage.exists("registry/m/v1/metadata.json")
    assert registry.register(tiny_model(), **REGISTER_ARGS) in ("v1", "v2")


def test_a_version_without_metadata_is_invisible(storage):
    registry = Registry(storage, "m")
    storage.write_bytes("registry/m/v1/model.skops", b"half written")  # a crashed register
    assert registry.versions() == []
    with pytest.raises(VersionNotFoundError, match="'v1'"):
        registry.load("v1")
    assert registry.register(tiny_model(), **REGISTER_ARGS) == "v2"
    assert [v["version"] for v in registry.versions()] == ["v2"]


def test_concurrent_registers_get_distinct_complete_versions(storage):
    registry = Registry(storage, "m")
    results, errors = [], []

    def register():
        try:
            results.append(Registry(storage, "m").register(tiny_model(), **REGISTER_ARGS))
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=register) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 4
    assert sorted(v["version"] for v in registry.versions()) == sorted(results)
    assert all(not storage.exists(f"registry/m/{v}/.claims") or storage.list(f"registry/m/{v}/.claims") == []
               for v in results)


# -- aliases, promotion, rollback --------------------------------------------------------------
def test_alias_files_are_replaced_atomically(storage):
    registry = Registry(storage, "m")
    for _ in range(2):
        registry.register(tiny_model(), **REGISTER_ARGS)
    stop, seen, bad = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            try:
                seen.add(Registry(storage, "m").get_alias("candidate"))
            except Exception as exc:  # a torn or missing file would land here
                bad.append(exc)

    registry.set_alias("candidate", "v1")
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(12):
            registry.set_alias("candidate", f"v{1 + i % 2}")
    finally:
        stop.set()
        thread.join()
    assert bad == [] and seen <= {"v1", "v2"}
    names = storage.list("registry/m/aliases/candidate")  # one file per change, no staging leftovers
    assert names == [f"{g:010d}.json" for g in range(1, 14)]
    doc = json.loads(storage.read_bytes(f"registry/m/aliases/candidate/{names[-1]}"))
    assert doc["version"] == "v2" and doc["alias"] == "candidate" and doc["generation"] == 13


def test_promote_and_rollback_walk_back(storage):
    registry = Registry(storage, "m")
    for _ in range(3):
        registry.register(tiny_model(), **REGISTER_ARGS)
    with pytest.raises(RegistryError, match="no earlier production"):
        registry.rollback()
    for version in ("v1", "v2", "v3"):
        registry.promote(version, reason=f"ship {version}", scores={"roc_auc": 0.9})
    assert registry.resolve("production") == "v3"
    assert registry.rollback(reason="bad latency") == "v2"
    assert registry.rollback() == "v1"
    assert registry.get_alias("production") == "v1"
    with pytest.raises(RegistryError, match="production is v1"):
        registry.rollback()
    registry.set_alias("candidate", "v3")
    registry.promote("candidate", reason="re-ship")
    assert registry.get_alias("production") == "v3" and registry.alias_history("production") == ["v1", "v3"]
    assert registry.rollback() == "v1"
    kinds = [(e["kind"], e.get("version")) for e in registry.events() if e["kind"] != "register"]
    assert kinds == [("promote", "v1"), ("promote", "v2"), ("promote", "v3"), ("rollback", "v2"),
                     ("rollback", "v1"), ("alias", "v3"), ("promote", "v3"), ("rollback", "v1")]
    rollbacks = registry.events(kind="rollback")
    assert rollbacks[0]["previous"] == "v3" and rollbacks[0]["reason"] == "bad latency"
    assert rollbacks[1]["reason"] == "manual"


def test_event_log_is_append_only_and_ordered(storage):
    registry = Registry(storage, "m")
    registry.register(tiny_model(), **REGISTER_ARGS)
    registry.set_alias("candidate", "v1", reason="test")
    registry.promote("v1", reason="first", scores={"roc_auc": 0.8})
    for i in range(5):
        registry.record_event("note", index=i)
    events = registry.events()
    assert [e["kind"] for e in events] == ["register", "alias", "promote"] + ["note"] * 5
    assert [e["index"] for e in events if e["kind"] == "note"] == list(range(5))
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert events[2]["scores"] == {"roc_auc": 0.8} and events[2]["previous"] is None
    assert Registry(storage, "other").events() == []
    with pytest.raises(RegistryError, match="event kind"):
        registry.record_event("../../escape")


# -- storage failures ---------------------------------------------------------------------------
def test_unreachable_storage_is_a_storage_error(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    uri = f"s3://nowhere/store?endpoint_override={endpoint}&scheme=http&region=us-east-1"
    # the same filesystem the URI gives, minus pyarrow's retries (6 s of back-off)
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                           retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    registry = Registry(Storage(uri, _resolved=(fs, "nowhere/store")), "m")  # constructing never touches it
    with pytest.raises(StorageError, match="cannot"):
        registry.register(tiny_model(), **REGISTER_ARGS)


def test_unwritable_local_storage_is_a_storage_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StorageError):
        Registry(Storage(str(blocker)), "m").register(tiny_model(), **REGISTER_ARGS)


def test_numpy_values_in_lineage_become_plain_json(tmp_path):
    registry = Registry(Storage(str(tmp_path)), "m")
    registry.register(tiny_model(), params={"C": np.float32(0.5), "layers": np.array([1, 2])},
                      metrics={"roc_auc": np.float64(0.75)}, data_fingerprint="f", config_hash="c",
                      extra={"n": np.int64(3)})
    meta = registry.metadata("v1")
    assert meta["params"] == {"C": 0.5, "layers": [1, 2]} and meta["extra"] == {"n": 3}
    assert registry.events(kind="register")[0]["metrics"] == {"roc_auc": 0.75}
