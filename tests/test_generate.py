"""The sample dataset: every shape, deterministic, drift controls that move what they say."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ray_mlops.config import config_from_dict, load_config
from ray_mlops.data.generate import GenerateSpec, generate, parse_modalities, sample_config
from ray_mlops.errors import DataError


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_every_shape_is_written(tmp_path):
    counts = generate(tmp_path, GenerateSpec(entities=40, seed=3))
    machines = pd.read_csv(tmp_path / "machines.csv")
    specs = pd.read_parquet(tmp_path / "specs.parquet")
    labels = pd.read_csv(tmp_path / "labels.csv")
    telemetry = pd.read_parquet(tmp_path / "telemetry")
    events = [json.loads(line) for f in (tmp_path / "events").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(machines) == len(specs) == len(labels) == counts["machines"] == 40
    assert set(labels["failed"]) <= {0, 1}
    assert {"machine_id", "timestamp", "temperature", "vibration", "pressure", "rotation"} <= set(telemetry.columns)
    assert len(telemetry) == counts["telemetry_rows"]
    assert all(isinstance(e["event"], dict) and isinstance(e["parts"], list) for e in events)
    assert any("downtime_min" not in e for e in events), "optional fields are sometimes absent"
    assert len(list((tmp_path / "notes").glob("M*.txt"))) == counts["notes"] >= 40
    assert len(list((tmp_path / "images").glob("M*.png"))) == counts["images"] >= 40


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate(tmp_path / "a", GenerateSpec(entities=30, seed=7))
    generate(tmp_path / "b", GenerateSpec(entities=30, seed=7))
    generate(tmp_path / "c", GenerateSpec(entities=30, seed=8))
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert _tree_digest(tmp_path / "a") != _tree_digest(tmp_path / "c")


def test_regenerating_leaves_no_stale_files(tmp_path):
    generate(tmp_path, GenerateSpec(entities=50, seed=1))
    generate(tmp_path, GenerateSpec(entities=10, seed=1))
    assert {p.name.split("_")[0] for p in (tmp_path / "notes").iterdir()} == {f"M{i:07d}" for i in range(10)}


def test_start_id_gives_fresh_ids(tmp_path):
    generate(tmp_path, GenerateSpec(entities=5, seed=1, start_id=1000))
    assert pd.read_csv(tmp_path / "labels.csv")["machine_id"].tolist() == [f"M{i:07d}" for i in range(1000, 1005)]


def _summary(root: Path) -> dict[str, float]:
    machines = pd.read_csv(root / "machines.csv")
    telemetry = pd.read_parquet(root / "telemetry")
    return {
        "age": machines["age_years"].mean(),
        "temperature": telemetry["temperature"].mean(),
        "failure_rate": pd.read_csv(root / "labels.csv")["failed"].mean(),
    }


class Variants:
    """The same seed under each drift control, each generated the first time a test asks for it.

    Only the tables and telemetry these tests read: each modality draws from its own seeded
    stream, so those files are the ones a generation of every modality writes.
    """

    def __init__(self, root: Path):
        self.root, self.paths = root, {}

    def __getitem__(self, drift: str) -> Path:
        if drift not in self.paths:
            self.paths[drift] = self.root / drift
            generate(self.paths[drift], GenerateSpec(entities=1500, seed=11, drift=drift,  # type: ignore[arg-type]
                                                         modalities=("table", "timeseries")))
        return self.paths[drift]


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Variants:
    return Variants(tmp_path_factory.mktemp("variants"))


@pytest.mark.slow  # generates four datasets (~5 s)
def test_drift_controls_move_what_they_claim(variants):
    base, covariate, prior, concept = (_summary(variants[d]) for d in ("none", "covariate", "prior", "concept"))
    assert covariate["age"] > base["age"] * 1.3 and covariate["temperature"] > base["temperature"] + 1.0
    assert prior["failure_rate"] > base["failure_rate"] + 0.15
    assert abs(prior["age"] - base["age"]) < 2.0, "prior drift keeps P(x | y) (ages move only through the class mix)"
    assert abs(concept["age"] - base["age"]) < 0.5 and abs(concept["temperature"] - base["temperature"]) < 0.3


def test_concept_drift_changes_the_relationship(variants):
    """Under concept drift, thermal stress (telemetry temperature slope) stops predicting failure."""

    def slope_gap(root: Path) -> float:
        telemetry = pd.read_parquet(root / "telemetry").sort_values(["machine_id", "timestamp"])
        slope = telemetry.groupby("machine_id")["temperature"].agg(lambda s: np.polyfit(np.arange(len(s)), s, 1)[0])
        labels = pd.read_csv(root / "labels.csv").set_index("machine_id")["failed"]
        return slope[labels[labels == 1].index].mean() - slope[labels[labels == 0].index].mean()

    assert slope_gap(variants["none"]) > 2 * abs(slope_gap(variants["concept"]))


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(entities=0), "--entities"),
        (dict(drift="sideways"), "--drift"),
        (dict(intensity=-1), "--intensity"),
        (dict(modalities=("video",)), "--modalities"),
        (dict(modalities=("events", "table")), "--modalities"),
    ],
)
def test_bad_options_are_named(spec, message):
    with pytest.raises(DataError, match=message):
        GenerateSpec(**spec)


# -- choosing modalities --------------------------------------------------------------
def test_only_the_chosen_modalities_are_written(tmp_path):
    counts = generate(tmp_path, GenerateSpec(entities=30, seed=3, modalities=("events", "timeseries")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events", "labels.csv", "telemetry"]
    assert counts == {"machines": 30, "failure_rate_pct": counts["failure_rate_pct"], "telemetry_rows": 30 * 48}


def test_a_modality_is_the_same_whichever_others_are_written(tmp_path):
    generate(tmp_path / "all", GenerateSpec(entities=30, seed=4))
    generate(tmp_path / "some", GenerateSpec(entities=30, seed=4, modalities=("timeseries",)))
    for name in ("labels.csv", "telemetry"):
        assert _tree_digest(tmp_path / "all" / name) == _tree_digest(tmp_path / "some" / name)


def test_regenerating_with_fewer_modalities_removes_the_others(tmp_path):
    generate(tmp_path, GenerateSpec(entities=10, seed=1))
    generate(tmp_path, GenerateSpec(entities=10, seed=1, modalities=("table",)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "machines.csv", "specs.parquet"]


def test_parse_modalities_orders_and_names_the_unknown():
    assert parse_modalities("timeseries,table, events") == ("table", "events", "timeseries")
    with pytest.raises(DataError, match=r"--modalities: unknown modality 'video' \(choose from table, events"):
        parse_modalities("table,video")
    with pytest.raises(DataError, match="no modality given"):
        parse_modalities(" , ")


def test_sample_config_lists_only_the_chosen_sources(tmp_path):
    document = sample_config({"storage": "/s"}, tmp_path, ("table", "image"))
    config = config_from_dict(document)
    assert [s.name for s in config.data.sources] == ["machines", "specs", "labels", "images"]
    assert config.data.root == str(tmp_path) and config.storage == "/s"
    assert [s.name for s in config_from_dict(sample_config({}, tmp_path, ("events",))).data.sources] == ["labels", "events"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_mlops.cli", *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_cli_generate_writes_a_config_for_the_chosen_modalities(tmp_path):
    done = _cli("generate", "--entities", "20", "--out", str(tmp_path), "--modalities", "timeseries,table")
    assert done.returncode == 0, done.stderr
    config = load_config(tmp_path / "ray_mlops.yaml")
    assert [s.name for s in config.data.sources] == ["machines", "specs", "labels", "telemetry"]
    assert all(Path(config.resolve_source_path(s)).exists() for s in config.data.sources)
    assert not (tmp_path / "images").exists() and not (tmp_path / "notes").exists()


def test_cli_generate_refuses_an_unknown_modality_in_one_line(tmp_path):
    done = _cli("generate", "--entities", "20", "--out", str(tmp_path / "d"), "--modalities", "table,video")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "ray-mlops: error: --modalities: unknown modality 'video' (choose from table, events, text, image, "
        "timeseries, comma-separated)"]
    assert not (tmp_path / "d").exists()
