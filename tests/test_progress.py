"""Progress lines: timestamped on a non-terminal, the real CLI's ingest prints them per source."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ray_mlops.progress import hide_progress, report, show_progress
from ray_mlops.train.search import SearchProgress

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ progress: "


class _Trial:
    def __init__(self, trial_id: str, status: str):
        self.trial_id, self.status = trial_id, status


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    handler = show_progress(stream)
    try:
        report("ingest: %s done: read %d", "sensors", 12)
    finally:
        hide_progress(handler)
    report("not shown")
    assert re.fullmatch(STAMP + r"ingest: sensors done: read 12\n", stream.getvalue())


def test_search_progress_counts_trials_and_keeps_the_best():
    stream = io.StringIO()
    handler = show_progress(stream)
    try:
        callback = SearchProgress("roc_auc", "max", total=3)
        trials = [_Trial("a", "RUNNING"), _Trial("b", "RUNNING"), _Trial("c", "PENDING")]
        callback.on_trial_result(0, trials, trials[0], {"roc_auc": 0.7})
        callback.on_trial_result(0, trials, trials[1], {"roc_auc": 0.9})
        callback.on_trial_complete(0, trials, trials[0])
        callback.on_trial_error(0, trials, trials[1])
    finally:
        hide_progress(handler)
    last = stream.getvalue().splitlines()[-1]
    assert last.endswith("search: 1/3 trials done, 0 running, 1 failed; best roc_auc 0.9000"), last


@pytest.mark.slow  # a CLI subprocess with its own Ray (~18 s)
def test_cli_ingest_prints_progress_per_source_without_a_tty(tmp_path):
    """Needs the Ray lock: the subprocess starts an embedded Ray. Per-source counts come while the records are read."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    from ray_mlops.data.generate import GenerateSpec, generate

    data = tmp_path / "data"
    generate(data, GenerateSpec(entities=200))  # what `ray-mlops generate --entities 200` writes
    config = tmp_path / "c.yaml"
    document = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
    document["storage"], document["data"]["root"] = str(tmp_path / "store"), str(data)
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    done = subprocess.run([str(BIN / "ray-mlops"), "--config", str(config), "ingest"], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if re.match(STAMP, line)]
    assert any("ingest: reading" in line for line in lines), done.stderr
    from ray_mlops.config import load_config

    staged = next(i for i, line in enumerate(lines) if "records read and joined" in line)
    for source in load_config(config).data.sources:
        finals = [re.search(rf"ingest: {source.name} done: read (\d+), accepted \d+, quarantined \d+", line) for line in lines]
        final = next(m for m in finals if m)
        running = [re.search(rf"ingest: {source.name}: read (\d+), accepted \d+, quarantined \d+", line)
                   for line in lines[:staged]]
        assert [m for m in running if m], (source.name, done.stderr)  # reported while the records are read
        assert [m for m in running if m][-1].group(1) == final.group(1), (source.name, done.stderr)  # and complete
    assert "will hang unless more CPUs" not in done.stderr + done.stdout
