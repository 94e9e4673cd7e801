"""The retraining's stages report progress and time themselves; its actors never get the token (no Ray)."""

from __future__ import annotations

import io
import json
import re

import pytest

from ray_mlops.config import config_from_dict, load_config
from ray_mlops.monitor.actor import actor_config
from ray_mlops.monitor.retrain import RetrainFailed, Stages
from ray_mlops.progress import hide_progress, show_progress

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ progress: "


def _lines(run) -> list[str]:
    stream = io.StringIO()
    handler = show_progress(stream)
    try:
        run()
    finally:
        hide_progress(handler)
    lines = stream.getvalue().splitlines()
    assert all(re.match(STAMP, line) for line in lines), lines
    return [re.sub(STAMP, "", line) for line in lines]


def test_each_stage_reports_its_start_and_its_time():
    stages = Stages("r7")
    values = []
    lines = _lines(lambda: values.extend([stages.run("ingest", lambda: 1), stages.run("search", lambda: 2)]))
    assert values == [1, 2] and list(stages.seconds) == ["ingest", "search"]
    assert [re.sub(r"\d+\.\d s$", "T s", line) for line in lines] == [
        "retrain r7: ingest started", "retrain r7: ingest done in T s",
        "retrain r7: search started", "retrain r7: search done in T s"]


def test_a_failed_stage_is_named_timed_and_reported():
    stages = Stages("r8")

    def boom():
        raise ValueError("no rows")

    def run():
        with pytest.raises(RetrainFailed) as failed:
            stages.run("gate", boom)
        assert failed.value.stage == "gate" and str(failed.value) == "gate: ValueError: no rows"

    lines = _lines(run)
    assert list(stages.seconds) == ["gate"]
    assert lines[-1].startswith("retrain r8: gate failed: ValueError: no rows in ")


def test_a_stage_that_raises_its_own_retrain_failed_keeps_it():
    stages = Stages("r9")

    def swap():
        raise RetrainFailed("swap", "cannot load v2; production rolled back")

    with pytest.raises(RetrainFailed, match="^swap: cannot load v2; production rolled back$"):
        stages.run("swap", swap)
    assert list(stages.seconds) == ["swap"]


def test_the_monitor_and_retrainer_get_the_config_without_the_token():
    config = load_config(overrides={"serve.token": "tok-never-in-an-actor"})
    given = actor_config(config)
    assert "tok-never-in-an-actor" not in json.dumps(given) and given["serve"]["token"] is None
    rebuilt = config_from_dict(given, origin="monitor args")
    assert rebuilt.digest() == config.digest()  # a retrained version records the driver's config hash
    assert rebuilt.model_dump(exclude={"serve"}) == config.model_dump(exclude={"serve"})
