"""`ray-mlops gc`: only finished ingest runs that latest.json does not name, dry run by default."""

from __future__ import annotations

from click.testing import CliRunner

from ray_mlops.cli import cli
from ray_mlops.storage import Storage


def _run(storage: Storage, fingerprint: str, run: str, *, finished: bool = True) -> str:
    folder = f"features/{fingerprint}/{run}"
    storage.write_bytes(f"{folder}/table/part-0.parquet", b"x")
    if finished:
        storage.write_json(f"{folder}/report.json", {"status": "ok"})
    return folder


def test_gc_lists_then_deletes_only_unreferenced_finished_runs(tmp_path):
    storage = Storage(str(tmp_path / "store"))
    old = _run(storage, "fp1", "run-1")
    live = _run(storage, "fp1", "run-2")
    building = _run(storage, "fp2", "run-3", finished=False)
    storage.write_json("features/latest.json", {"fingerprint": "fp1", "run": "run-2", "rows": 1, "counts": {},
                                                "schema": {"entity_key": "k", "label": "y", "task": "classification",
                                                           "features": {}}})
    runner = CliRunner()
    dry = runner.invoke(cli, ["--storage", storage.root, "gc"])
    assert dry.exit_code == 0, dry.output
    assert f"would delete: {old}" in dry.output and live not in dry.output
    assert storage.exists(old)
    done = runner.invoke(cli, ["--storage", storage.root, "gc", "--delete"])
    assert done.exit_code == 0, done.output
    assert not storage.exists(old) and storage.exists(live) and storage.exists(building)
