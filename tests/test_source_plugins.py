"""Source types are plugins: a new format is one class, registered from this very module.

The toy ``kv`` format (files ``<entity>.kv`` of ``name=value`` lines) goes through the
real ingest on Ray Data, online featurization and the HTTP request model exactly like a
built-in format, without a line changed elsewhere.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Optional

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import Field

from ray_mlops.config import SourceSettings, load_config
from ray_mlops.data.quarantine import reject_frame
from ray_mlops.data.sources import RecordError, register_source, source_type
from ray_mlops.data.sources._read import read_files
from ray_mlops.data.sources.base import Columns, FeatureKind, SourceType, Split, empty_rejects, field_path, key_from_path
from ray_mlops.errors import ConfigError


class KeyValueSettings(SourceSettings):
    format: Literal["kv"]
    scale: float = Field(default=1.0, gt=0)


class KeyValueSource(SourceType):
    """One ``<entity>.kv`` file per entity: features are the pair count and the scaled sum of values."""

    formats: ClassVar[tuple[str, ...]] = ("kv",)
    Settings = KeyValueSettings

    def features(self) -> dict[str, FeatureKind]:
        return {self.column("pairs"): "numeric", self.column("total"): "numeric"}

    def read(self, listed: Any):
        return read_files(listed.fs, listed.paths)

    def _row(self, pairs: dict[str, float]) -> list[float]:
        return [float(len(pairs)), self.settings.scale * float(sum(pairs.values()))]

    def records(self, batch: pd.DataFrame) -> Split:
        rows, keys, reasons, bad = [], [], [], []
        for path, data in zip(batch["path"], batch["bytes"]):
            try:
                pairs = {k: float(v) for k, v in (line.split("=", 1) for line in bytes(data).decode().splitlines() if line)}
            except ValueError:
                reasons.append("not name=number lines")
                bad.append(path)
                continue
            rows.append(self._row(pairs))
            keys.append(key_from_path(path, r"^(?P<key>.+)\.kv$"))
        good = pd.DataFrame(np.asarray(rows, dtype=float).reshape(len(rows), 2), columns=list(self.features()))
        good.insert(0, self.key, pd.Series(keys, dtype=object))
        return good, reject_frame(self.name, reasons, bad)

    def entities(self, records: pd.DataFrame) -> Split:
        return records.drop_duplicates(self.key).reset_index(drop=True), empty_rejects()

    def accepted(self, entities: pd.DataFrame) -> int:
        return len(entities)

    def online(self, instances: list[dict]) -> Columns:
        rows = []
        for i, record in enumerate(instances):
            pairs = record.get(self.name) or {}
            if not all(isinstance(v, (int, float)) for v in pairs.values()):
                raise RecordError(field_path(i, self.name), "expected numbers")
            rows.append(self._row(pairs))
        matrix = np.asarray(rows, dtype=float).reshape(len(rows), 2)
        return {name: matrix[:, j] for j, name in enumerate(self.features())}

    def request_fields(self) -> dict[str, tuple]:
        return {self.name: (Optional[dict[str, float]], None)}


@pytest.fixture(scope="module")
def kv_format():
    register_source(KeyValueSource)
    return KeyValueSource


def _project(tmp_path, scale: float = 2.0) -> Any:
    root = tmp_path / "data"
    (root / "kv").mkdir(parents=True, exist_ok=True)
    ids = [f"e{i}" for i in range(40)]
    pd.DataFrame({"id": ids, "y": [i % 2 for i in range(40)], "x": np.arange(40.0)}).to_csv(root / "labels.csv", index=False)
    for i, entity in enumerate(ids):
        (root / "kv" / f"{entity}.kv").write_text(f"a={i}\nb=1.5\n")
    (root / "kv" / "broken.kv").write_text("a=not-a-number\n")
    document = {"storage": str(tmp_path / "store"), "data": {
        "root": str(root), "entity_key": "id", "label": "y",
        "sources": [{"name": "labels", "format": "csv", "path": "labels.csv",
                     "columns": {"x": {"type": "float"}, "y": {"type": "int", "min": 0, "max": 1}}},
                    {"name": "pairs", "format": "kv", "path": "kv", "scale": scale}]}}
    path = tmp_path / "kv.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_config(path)


def test_a_registered_format_validates_its_own_settings(kv_format, tmp_path):
    assert source_type("kv") is KeyValueSource
    config = _project(tmp_path)
    assert isinstance(config.data.sources[1], KeyValueSettings) and config.data.sources[1].scale == 2.0
    with pytest.raises(ConfigError, match=r"data\.sources\.1\.scale: Input should be greater than 0"):
        _project(tmp_path, scale=-1.0)


@pytest.mark.slow  # fast lane budget: covered by the full suite
def test_a_registered_format_is_ingested_served_and_featurized_online(kv_format, ray_session, tmp_path):
    from ray_mlops.data.ingest import ingest
    from ray_mlops.data.online import featurize_instances
    from ray_mlops.data.schema import read_feature_table
    from ray_mlops.serve.schemas import request_models
    from ray_mlops.storage import Storage

    config = _project(tmp_path)
    storage = Storage(config.storage)
    result = ingest(config, storage)
    assert result.counts["pairs"] == {"read": 41, "accepted": 40, "quarantined": 1, "reasons": {"not name=number lines": 1}}
    table = read_feature_table(storage).set_index("id")
    assert table.loc["e3", "pairs__total"] == 2.0 * (3 + 1.5) and table.loc["e3", "pairs__pairs"] == 2.0
    online = featurize_instances(config, [{"x": 3.0, "pairs": {"a": 3, "b": 1.5}}])
    assert online.loc[0, "pairs__total"] == table.loc["e3", "pairs__total"]
    assert "pairs" in request_models(config).instance_fields
    with pytest.raises(RecordError, match=r"instances\[0\]\.pairs: expected numbers"):
        featurize_instances(config, [{"x": 1.0, "pairs": {"a": "no"}}])


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # the statistics of 1e308 readings overflow, as in batch
def test_online_readings_accept_finite_numbers_only_on_the_fast_and_the_slow_check():
    from ray_mlops.data.sources import sources_of

    source = next(s for s in sources_of(load_config()) if s.settings.format == "timeseries")
    signals = source.settings.signals
    good = {name: 1.5 * (i + 1) for i, name in enumerate(signals)}
    ints = dict(good, **{signals[0]: 7})
    huge = {name: 1e308 for name in signals}  # finite values whose sum overflows
    columns = source.online([{source.name: [good, ints, huge]}])
    assert columns[source.column("n_readings")][0] == 3.0
    for bad, where in ((True, signals[0]), (float("nan"), signals[1]), (float("inf"), signals[0]), ("1.5", signals[2])):
        with pytest.raises(RecordError, match=rf"instances\[0\]\.{source.name}\[1\]\.{where}: expected a finite number"):
            source.online([{source.name: [good, dict(good, **{where: bad})]}])


def test_online_readings_checked_in_bulk_equal_the_reading_by_reading_path():
    from ray_mlops.data.sources import sources_of

    source = next(s for s in sources_of(load_config()) if s.settings.format == "timeseries")
    rng = np.random.default_rng(11)
    instances = [{source.name: [{s: float(v) for s, v in zip(source.settings.signals, rng.normal(size=4) * 10)}
                                for _ in range(n)]} for n in (24, 0, 3, 1)] + [{}]
    bulk = source.online(instances)
    assert source._bulk(instances) is not None
    one_by_one = source.online(instances + [{source.name: {s: 1.0 for s in source.settings.signals}}])  # a lone object: slow path
    for name, values in bulk.items():
        np.testing.assert_array_equal(values, one_by_one[name][:-1])
    assert np.isnan(bulk[source.column("n_readings")][[1, 4]]).all()


class ExplodingSettings(KeyValueSettings):
    format: Literal["kvboom"]  # type: ignore[assignment]


class ExplodingSource(KeyValueSource):
    """A source type whose record step fails: the ingest error must name the real cause."""

    formats: ClassVar[tuple[str, ...]] = ("kvboom",)
    Settings = ExplodingSettings

    def records(self, batch: pd.DataFrame) -> Split:
        raise RuntimeError("kv parser exploded on purpose")


def test_a_failing_record_step_is_a_data_error_naming_the_cause(kv_format, ray_session, tmp_path):
    from ray_mlops.data.ingest import ingest
    from ray_mlops.data.schema import LATEST
    from ray_mlops.errors import DataError
    from ray_mlops.storage import Storage

    register_source(ExplodingSource)
    raw = _project(tmp_path).model_dump(mode="json")
    raw["data"]["sources"][1]["format"] = "kvboom"
    config = load_config(overrides={"storage": raw["storage"], "data": raw["data"]})
    with pytest.raises(DataError, match=r"ingest failed: RuntimeError: kv parser exploded on purpose"):
        ingest(config, Storage(config.storage))
    assert not Storage(config.storage).exists(LATEST)
