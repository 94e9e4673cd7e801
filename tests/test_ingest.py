"""Ingestion on a real local Ray: outputs, exact quarantine counts, bad input, signal per modality."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ray_mlops.config import load_config
from ray_mlops.data.fingerprint import fingerprint_sources
from ray_mlops.data.generate import GenerateSpec, generate
from ray_mlops.data.ingest import ingest
from ray_mlops.data.online import featurize_instances
from ray_mlops.data.schema import LATEST, latest_ingest, read_feature_table, read_reference
from ray_mlops.errors import ConfigError, DataError, RejectRateError
from ray_mlops.storage import Storage

pytestmark = pytest.mark.timeout(300)


def _input_counts(root: Path) -> dict[str, int]:
    """Records per source, counted independently of the pipeline."""
    events = sum(len([l for l in f.read_bytes().split(b"\n") if l.strip()]) for f in (root / "events").glob("*.jsonl"))
    return {
        "labels": len(pd.read_csv(root / "labels.csv")),
        "machines": len(pd.read_csv(root / "machines.csv")),
        "specs": pq.read_metadata(root / "specs.parquet").num_rows,
        "events": events,
        "notes": len(list((root / "notes").iterdir())),
        "images": len(list((root / "images").iterdir())),
        "telemetry": sum(pq.read_metadata(f).num_rows for f in (root / "telemetry").glob("*.parquet")),
    }


def test_sample_ingest_writes_table_profile_and_fingerprint(sample_ingest, sample_data):
    config, storage, result = sample_ingest
    table = read_feature_table(storage)
    assert result.rows == len(table) == 1500
    assert list(table.columns) == [config.data.entity_key, config.data.label, *result.schema.features]
    assert table[config.data.entity_key].is_unique
    assert len(result.fingerprint) == 64 and latest_ingest(storage).fingerprint == result.fingerprint
    profile = storage.read_json(f"{result.folder}/profile.json")
    assert profile["schema"]["features"] == result.schema.features
    assert profile["features"]["age_years"]["kind"] == "numeric"
    assert set(profile["features"]["model"]["levels"]) == {"A100", "B200", "C300", "D400"}
    reference = read_reference(storage)
    assert 0 < len(reference) <= config.data.reference_sample
    assert list(reference.columns) == list(table.columns)
    for name, counts in _input_counts(sample_data).items():
        assert result.counts[name] == {"read": counts, "accepted": counts, "quarantined": 0, "reasons": {}}, name


def _raw_record(root: Path, machine_id: str) -> dict:
    """One machine's raw request record, assembled from the files batch ingestion read."""
    machines = pd.read_csv(root / "machines.csv").set_index("machine_id")
    specs = pd.read_parquet(root / "specs.parquet").set_index("machine_id")
    telemetry = pd.read_parquet(root / "telemetry")
    events = [json.loads(l) for f in sorted((root / "events").glob("*.jsonl")) for l in f.read_text().splitlines()]
    readings = telemetry[telemetry["machine_id"] == machine_id].sort_values("timestamp")
    return {
        **machines.loc[machine_id].to_dict(),
        **{k: (int(v) if k == "firmware" else v) for k, v in specs.loc[machine_id].to_dict().items()},
        "events": [e for e in events if e["machine_id"] == machine_id],
        "notes": [p.read_text() for p in sorted((root / "notes").glob(f"{machine_id}_*.txt"))],
        "images": [base64.b64encode(p.read_bytes()).decode() for p in sorted((root / "images").glob(f"{machine_id}_*.png"))],
        "telemetry": readings.drop(columns=["machine_id", "timestamp"]).to_dict("records"),
    }


def test_batch_and_online_featurization_agree(sample_ingest, sample_data):
    config, storage, result = sample_ingest
    table = read_feature_table(storage).set_index(config.data.entity_key)
    ids = table.index[:: len(table) // 25][:25].tolist()
    online = featurize_instances(config, [_raw_record(sample_data, m) for m in ids])
    batch = table.loc[ids, list(result.schema.features)].reset_index(drop=True)
    pd.testing.assert_frame_equal(online, batch, check_exact=False, rtol=1e-12, atol=1e-12)


MODALITIES = {
    "events": "events__",
    "notes": "notes__",
    "images": "images__",
    "telemetry": "telemetry__",
}
STRUCTURED = ["age_years", "rated_power_kw", "firmware", "model", "site", "load_class"]


def _cv_auc(table: pd.DataFrame, columns: list[str], label: str) -> float:
    features = pd.get_dummies(table[columns], dtype=float).fillna(0.0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.3))
    return float(cross_val_score(model, features, table[label], cv=5, scoring="roc_auc").mean())


def test_every_modality_carries_signal(sample_ingest):
    config, storage, result = sample_ingest
    table = read_feature_table(storage)
    every = list(result.schema.features)
    auc_all = _cv_auc(table, every, config.data.label)
    auc_structured = _cv_auc(table, STRUCTURED, config.data.label)
    assert auc_all > auc_structured + 0.08, (auc_all, auc_structured)
    for modality, prefix in MODALITIES.items():
        without = [c for c in every if not c.startswith(prefix)]
        assert _cv_auc(table, without, config.data.label) < auc_all - 0.005, modality


def _corrupt(root: Path) -> dict[str, dict[str, int]]:
    """Break known records in known ways; return the exact quarantine expected."""
    machines = pd.read_csv(root / "machines.csv", dtype=str)
    machines.loc[0, "age_years"] = "old"
    machines.loc[1, "age_years"] = "99"
    machines.loc[2, "model"] = "Z999"
    machines = pd.concat([machines, pd.DataFrame([{"machine_id": "M9999999", "model": "A100", "site": "S01", "age_years": "3"}])])
    machines.to_csv(root / "machines.csv", index=False)
    specs = pq.read_table(root / "specs.parquet").to_pandas()
    specs = pd.concat([specs, specs.iloc[[5]]], ignore_index=True)  # a duplicate key: both rows rejected
    pq.write_table(pa.Table.from_pandas(specs, preserve_index=False), root / "specs.parquet")
    with open(root / "events" / "part-00000.jsonl", "a") as f:
        f.write('{"machine_id": "M0000003", "event": {broken\n["not", "an", "object"]\n{"event": {"type": "error"}}\n')
    (root / "notes" / "M0000004_9.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (root / "images" / "M0000005_9.png").write_bytes(b"not a png at all")
    (root / "images" / "M0000006_8.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    telemetry_file = root / "telemetry" / "part-00000.parquet"
    telemetry = pq.read_table(telemetry_file).to_pandas()
    telemetry.loc[[0, 1, 2], "vibration"] = np.nan
    telemetry.loc[3, "pressure"] = np.inf
    pq.write_table(pa.Table.from_pandas(telemetry, preserve_index=False), telemetry_file)
    return {
        "machines": {"age_years: not a number": 1, "age_years: above maximum 60": 1, "model: unknown level": 1},
        "specs": {"machine_id: duplicate key": 2},
        "events": {"malformed JSON": 1, "not a JSON object": 1, "machine_id: missing": 1},
        "notes": {"not UTF-8 text": 1},
        "images": {"unreadable image": 2},
        "telemetry": {"vibration: missing or not finite": 3, "pressure: missing or not finite": 1},
        "entities": {"failed: missing (entity has no label)": 1},
    }


@pytest.mark.slow  # fast lane budget: covered by the full suite
def test_quarantine_counts_are_exact(ray_session, tmp_path):
    root = tmp_path / "data"
    generate(root, GenerateSpec(entities=120, seed=5))
    expected = _corrupt(root)
    inputs = _input_counts(root)
    config = load_config(overrides={"data.root": str(root), "storage": str(tmp_path / "store"), "data.max_reject_rate": 0.5})
    storage = Storage(config.storage)
    result = ingest(config, storage)
    for source, reasons in expected.items():
        counts = result.counts[source]
        assert counts["reasons"] == reasons, source
        assert counts["quarantined"] == sum(reasons.values())
        if source in inputs:
            assert counts["read"] == inputs[source] == counts["accepted"] + counts["quarantined"], source
    assert result.rows == 120
    assert result.counts["entities"]["read"] == 121  # 120 labeled machines + the one without a label
    quarantined = pd.concat(
        pq.read_table(p).to_pandas() for p in (tmp_path / "store" / result.folder / "quarantine").rglob("*.parquet")
    )
    assert len(quarantined) == sum(sum(r.values()) for r in expected.values())
    assert quarantined["record"].str.contains("M9999999").sum() == 1


@pytest.mark.slow  # two ingests of its own (~4 s)
def test_reject_rate_above_threshold_fails_and_keeps_previous_table(ray_session, tmp_path):
    root = tmp_path / "data"
    generate(root, GenerateSpec(entities=60, seed=2))
    store = tmp_path / "store"
    config = load_config(overrides={"data.root": str(root), "storage": str(store), "data.max_reject_rate": 0.02})
    first = ingest(config, Storage(str(store)))
    _corrupt(root)
    with pytest.raises(RejectRateError, match="machines: 3 of 61 quarantined"):
        ingest(config, Storage(str(store)))
    assert latest_ingest(Storage(str(store))).fingerprint == first.fingerprint


def test_fingerprint_tracks_content(ray_session, tmp_path):
    root = tmp_path / "data"
    generate(root, GenerateSpec(entities=20, seed=1))
    config = load_config(overrides={"data.root": str(root)})
    before = fingerprint_sources(config)
    assert fingerprint_sources(config) == before
    note = next((root / "notes").iterdir())
    note.write_text(note.read_text() + " leak")
    assert fingerprint_sources(config) != before


@pytest.fixture
def small_data(tmp_path) -> Path:
    root = tmp_path / "data"
    generate(root, GenerateSpec(entities=20, seed=1))
    return root


def test_missing_source_is_named(ray_session, small_data, tmp_path):
    shutil.rmtree(small_data / "images")
    config = load_config(overrides={"data.root": str(small_data), "storage": str(tmp_path / "s")})
    with pytest.raises(DataError, match="source 'images': not found"):
        ingest(config, Storage(config.storage))
    assert not Storage(config.storage).exists(LATEST)


def test_source_without_entity_key_is_named(ray_session, small_data, tmp_path):
    pd.read_csv(small_data / "machines.csv").rename(columns={"machine_id": "id"}).to_csv(small_data / "machines.csv", index=False)
    config = load_config(overrides={"data.root": str(small_data), "storage": str(tmp_path / "s")})
    with pytest.raises(DataError, match=r"source 'machines': .*machines.csv has no column 'machine_id'"):
        ingest(config, Storage(config.storage))


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((Path(__file__).parents[1] / "configs" / "default.yaml").read_text().replace("entity_key:", "entity_kye:"))
    with pytest.raises(ConfigError, match="entity_kye"):
        load_config(bad)
    with pytest.raises(ConfigError, match="label column 'nope'"):
        load_config(overrides={"data.label": "nope"})
    with pytest.raises(ConfigError, match=r"data\.sources\.0\.format: unknown format 'xlsx'; known formats: csv, image, jsonl"):
        load_config(overrides={"data.sources": [{"name": "x", "format": "xlsx", "path": "x"}]})
    with pytest.raises(ConfigError, match=r"data\.sources\.4\.hash_features: Input should be less than or equal to 256"):
        load_config(overrides={"data.sources": [*load_config().model_dump()["data"]["sources"][:4],
                                                {"name": "n", "format": "text", "path": "n", "hash_features": 999}]})


def test_bring_your_own_tabular_data(ray_session, tmp_path, repo_root):
    rng = np.random.default_rng(0)
    n = 400
    customers = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "tenure_months": rng.integers(0, 72, n),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "monthly_charges": rng.uniform(10, 120, n).round(2),
            "support_calls": rng.poisson(1.5, n).astype(float),
        }
    )
    customers.loc[::10, "support_calls"] = np.nan  # optional column: kept, imputed later
    customers["churned"] = (rng.random(n) < 1 / (1 + np.exp(0.05 * customers["tenure_months"] - 1))).astype(int)
    customers.loc[7, "plan"] = "platinum"  # one bad row
    (tmp_path / "churn").mkdir()
    customers.to_csv(tmp_path / "churn" / "customers.csv", index=False)
    config = load_config(
        repo_root / "configs" / "tabular-example.yaml",
        overrides={"data.root": str(tmp_path / "churn"), "storage": str(tmp_path / "store")},
    )
    storage = Storage(config.storage)
    result = ingest(config, storage)
    table = read_feature_table(storage)
    assert result.rows == len(table) == n - 1
    assert result.counts["customers"]["reasons"] == {"plan: unknown level": 1}
    assert set(result.schema.features) == {"tenure_months", "plan", "monthly_charges", "support_calls"}
    assert table["support_calls"].isna().sum() == 40


@pytest.mark.slow  # an ingest and a search of its own (~6 s)
def test_ingest_and_train_on_a_config_of_chosen_modalities(ray_session, tmp_path):
    """``generate --modalities``' config: only those sources (and the labels) are ingested, and a model trains on it."""
    from ray_mlops.config import config_from_dict
    from ray_mlops.data.generate import sample_config
    from ray_mlops.pipeline import train_and_promote

    from train_fixtures import tiny_config

    root = tmp_path / "data"
    generate(root, GenerateSpec(entities=300, seed=2, modalities=("events", "timeseries")))
    document = sample_config({"storage": str(tmp_path / "store")}, root, ("events", "timeseries"))
    document["train"] = tiny_config(num_samples=2).model_dump(mode="json")
    config = config_from_dict(document)
    storage = Storage(config.storage)
    result = ingest(config, storage)
    assert result.rows == 300
    assert list(result.counts) == ["labels", "events", "telemetry", "entities"]
    assert result.counts["telemetry"] == {"read": 300 * 48, "accepted": 300 * 48, "quarantined": 0, "reasons": {}}
    assert {name.split("__")[0] for name in result.schema.features} == {"events", "telemetry"}
    outcome = train_and_promote(config, storage)
    assert outcome.version and outcome.ingest.fingerprint == result.fingerprint
