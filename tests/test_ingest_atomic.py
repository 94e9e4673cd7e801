"""Atomic ingest publication, on real Ray Data and real files.

- a re-ingest of unchanged data while a reader streams the previous table: the reader
  finishes and the table it read is intact (never deleted or rewritten);
- a re-ingest that fails halfway: ``features/latest.json`` still names a complete,
  readable table;
- the fingerprint covers the data config: the same files under other column checks
  are another table.
"""

from __future__ import annotations

import threading

import pyarrow.dataset as pads
import pytest

pytestmark = pytest.mark.slow  # re-ingests of its own beside a reader (~27 s); test_ingest keeps the ingest smoke in the fast lane

ENTITIES = 300


@pytest.fixture
def fresh(ray_session, tmp_path):
    from ray_mlops.config import load_config
    from ray_mlops.data.generate import GenerateSpec, generate
    from ray_mlops.data.ingest import ingest
    from ray_mlops.storage import Storage

    generate(tmp_path / "data", GenerateSpec(entities=ENTITIES, seed=7))
    config = load_config(overrides={"data.root": str(tmp_path / "data"), "storage": str(tmp_path / "store")})
    storage = Storage(config.storage)
    return config, storage, ingest(config, storage)


def _files(storage, folder: str) -> dict[str, int]:
    return {name: storage._info(f"{folder}/{name}").mtime_ns for name in storage.list(folder, recursive=True)}


def _with_column_check(config, source: str, column: str, **check):
    from ray_mlops.config import config_from_dict

    raw = config.model_dump(mode="json")
    for settings in raw["data"]["sources"]:
        if settings["name"] == source:
            settings["columns"][column].update(check)
    return config_from_dict(raw)


def test_a_reingest_of_unchanged_data_leaves_the_table_a_reader_streams_intact(fresh):
    from ray_mlops.data.ingest import ingest
    from ray_mlops.data.schema import latest_ingest, read_feature_table

    config, storage, first = fresh
    before = _files(storage, first.folder)
    expected = read_feature_table(storage, first)
    stop, reads, errors = threading.Event(), [], []

    def reader():  # streams the first table batch by batch, over and over (a breath between reads:
        while not stop.wait(0.02):  # a reader that never yields the GIL starves the driver's Ray Data executor)
            try:
                dataset = pads.dataset(storage.path(first.table_dir), filesystem=storage.fs, format="parquet")
                reads.append(sum(batch.num_rows for batch in dataset.to_batches()))
            except Exception as exc:  # a table deleted under the reader lands here
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        second = ingest(config, storage)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert errors == [] and reads and set(reads) == {first.rows}
    assert second.fingerprint == first.fingerprint and second.folder != first.folder
    assert _files(storage, first.folder) == before  # not one file of the first run rewritten
    assert read_feature_table(storage, first).equals(expected)
    assert latest_ingest(storage).folder == second.folder


def test_a_reingest_that_fails_halfway_leaves_latest_on_a_complete_table(fresh):
    from ray_mlops.data.ingest import ingest
    from ray_mlops.data.schema import latest_ingest, read_feature_table, read_reference
    from ray_mlops.errors import RejectRateError

    config, storage, first = fresh
    rejecting = _with_column_check(config, "machines", "age_years", max=-1.0)  # every machine is rejected
    with pytest.raises(RejectRateError):
        ingest(rejecting, storage)
    latest = latest_ingest(storage)
    assert latest.folder == first.folder
    assert len(read_feature_table(storage, latest)) == first.rows
    assert len(read_reference(storage, latest)) > 0
    assert storage.read_json(f"{latest.folder}/report.json")["status"] == "ok"
    assert storage.read_json(f"{latest.folder}/profile.json")["rows"] == first.rows


def test_the_fingerprint_covers_the_data_config(fresh):
    from ray_mlops.data.fingerprint import fingerprint_sources

    config, storage, first = fresh
    stricter = _with_column_check(config, "machines", "age_years", max=30.0)
    assert fingerprint_sources(config) == first.fingerprint
    assert fingerprint_sources(stricter) != first.fingerprint
    moved = config.model_copy(update={"data": config.data.model_copy(update={"root": config.data.root + "/."})})
    assert fingerprint_sources(moved) == first.fingerprint  # where the files live is not what they are
