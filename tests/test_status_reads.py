"""`ray-mlops status` reads a bounded number of objects, whatever the history length (no Ray).

Window verdicts and the retraining lifecycle go to the monitor's own event log
(time-partitioned), not the registry's: status reads the monitor's checkpoint, the
aliases, the last registry events and the last retraining events — the same objects
with 10 windows of history as with 10,000.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ray_mlops.config import load_config
from ray_mlops.monitor.state import MonitorState
from ray_mlops.monitor.store import MonitorStore
from ray_mlops.monitor.tester import VerdictSummary
from ray_mlops.storage import Storage


class CountingStorage(Storage):
    """A real local storage that counts the objects read and the listings made."""

    reads = 0
    listings = 0

    def read_bytes(self, rel: str) -> bytes:
        CountingStorage.reads += 1
        return super().read_bytes(rel)

    def list(self, rel: str = "", *, recursive: bool = False) -> list[str]:
        CountingStorage.listings += 1
        return super().list(rel, recursive=recursive)


def _history(root, windows: int) -> tuple:
    config = load_config(overrides={"storage": str(root)})
    store = MonitorStore(Storage(config.storage))
    # Events fall in hour partitions by their time: start this history on a fixed hour (the
    # store's clock only moves forward from its last tick), so a run that crosses an hour on
    # the wall clock makes no extra partition and the two histories list alike.
    store._last_micros = int(datetime(2100, 1, 1, tzinfo=timezone.utc).timestamp() * 1e6)
    store.record_event("retrain_started", retrain="r1")
    summaries = []
    for index in range(windows):
        verdict = {"index": index, "alarm": False, "drift": False, "p_value": 0.5, "detectors": {"inputs": 0.5},
                   "end": "2026-01-01T00:00:00+00:00", "rows": 100}
        store.save_verdict(index, {**verdict, "features": {}})
        store.record_event("monitor_window", **verdict)
        summaries.append(verdict)
    store.record_event("retrain_finished", retrain="r1", status="rejected")
    state = MonitorState(started="2026-01-01T00:00:00+00:00", windows=windows,
                         verdicts=[VerdictSummary.from_dict(v) for v in summaries[-50:]])
    store.save_state(state.to_json())
    return config


def _reads(config) -> tuple[int, int, object]:
    from ray_mlops import loop

    CountingStorage.reads = CountingStorage.listings = 0
    report = loop.status(config, with_ray=False, storage=CountingStorage(config.storage))
    return CountingStorage.reads, CountingStorage.listings, report


@pytest.mark.timeout(120)
def test_status_reads_the_same_objects_with_10_and_10000_windows(tmp_path):
    short = _reads(_history(tmp_path / "short", 10))
    long = _reads(_history(tmp_path / "long", 10_000))
    assert short[:2] == long[:2]  # objects read, listings made
    for (_, _, report), windows in ((short, 10), (long, 10_000)):
        assert report.monitor.windows == windows and not report.monitor.running
        assert [e["kind"] for e in report.retrains] == ["retrain_started", "retrain_finished"]
        assert report.registry.promotions == []  # no verdict ever lands in the registry's log


def test_monitor_events_are_partitioned_by_hour_and_read_back_by_kind(tmp_path):
    store = MonitorStore(Storage(str(tmp_path)))
    for kind in ("monitor_window", "monitor_alarm", "monitor_window", "retrain_started"):
        store.record_event(kind, window=1)
    names = Storage(str(tmp_path)).list("monitor/events", recursive=True)
    files = [n for n in names if n.endswith(".json")]
    assert len(files) == 4 and all(n.startswith("date=") and "/hour=" in n for n in files)
    assert [e["kind"] for e in store.events()] == ["monitor_window", "monitor_alarm", "monitor_window",
                                                   "retrain_started"]
    assert len(store.events("monitor_window")) == 2
    assert [e["kind"] for e in store.recent_events(("monitor_window", "monitor_alarm"), 2)] == [
        "monitor_alarm", "monitor_window"]
    with pytest.raises(ValueError, match="invalid event kind"):
        store.record_event("Bad Kind")


def test_one_status_type_is_rendered_by_the_cli_table_json_and_the_report(tmp_path):
    import json

    from click.testing import CliRunner

    from ray_mlops import loop
    from ray_mlops.cli import cli
    from ray_mlops.monitor.report import render_report

    config = _history(tmp_path, 3)
    report = loop.status(config, with_ray=False)
    as_json = CliRunner().invoke(cli, ["--storage", config.storage, "status", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output) == json.loads(json.dumps(report.to_json(), default=str))
    table = CliRunner().invoke(cli, ["--storage", config.storage, "status"])
    assert table.exit_code == 0 and "monitor:    not running; windows=3 records=0 open=-" in table.output
    assert "  window    2" in table.output
    page = render_report([], [], {"title": "t"}, status=report.monitor)
    assert "<h2>Monitor</h2>" in page and "windows tested</td><td>3" in page
