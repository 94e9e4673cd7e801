"""An ingest that stops making progress fails within ``data.stall_timeout_s`` with a DataError
and publishes nothing, instead of waiting on a stuck task for Ray Data's default 30 minutes;
once the task is unstuck the same ingest completes (real Ray Data on the session's Ray).

The stuck task is a real one: a source type registered from this module whose record step
waits for a file the test creates only after the ingest has given up.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import pytest

from ray_mlops.config import config_from_dict
from ray_mlops.data.schema import LATEST
from ray_mlops.data.sources import register_source
from ray_mlops.errors import DataError
from ray_mlops.storage import Storage
from test_source_plugins import KeyValueSettings, KeyValueSource

RELEASE_WAIT_S = 60  # a stuck task gives up by itself after this long (the test releases it sooner)


class HeldSettings(KeyValueSettings):
    format: Literal["held-kv"]  # type: ignore[assignment]
    release: str  # the record step waits until this file exists


class HeldSource(KeyValueSource):
    """The ``kv`` toy format, held until the test lets it go."""

    formats: ClassVar[tuple[str, ...]] = ("held-kv",)
    Settings = HeldSettings

    def records(self, batch: pd.DataFrame):
        deadline = time.monotonic() + RELEASE_WAIT_S
        while not Path(self.settings.release).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().records(batch)


def _config(tmp_path: Path, release: Path):
    root = tmp_path / "data"
    (root / "kv").mkdir(parents=True)
    ids = [f"e{i}" for i in range(40)]
    pd.DataFrame({"id": ids, "y": [i % 2 for i in range(40)], "x": np.arange(40.0)}).to_csv(root / "labels.csv", index=False)
    for i, entity in enumerate(ids):
        (root / "kv" / f"{entity}.kv").write_text(f"a={i}\n")
    return config_from_dict({"storage": str(tmp_path / "store"), "data": {
        "root": str(root), "entity_key": "id", "label": "y", "stall_timeout_s": 3,
        "sources": [{"name": "labels", "format": "csv", "path": "labels.csv",
                     "columns": {"x": {"type": "float"}, "y": {"type": "int", "min": 0, "max": 1}}},
                    {"name": "pairs", "format": "held-kv", "path": "kv", "release": str(release)}]}})


@pytest.mark.slow
def test_a_stalled_ingest_fails_with_a_data_error_and_publishes_nothing(ray_session, tmp_path):
    from ray_mlops.data.ingest import ingest

    register_source(HeldSource)
    release = tmp_path / "release"
    config = _config(tmp_path, release)
    storage = Storage(config.storage)
    try:
        with pytest.raises(DataError, match=r"no progress for 3 s \(data\.stall_timeout_s\).*nothing was published"):
            ingest(config, storage)
    finally:
        release.touch()  # the held task finishes and gives its CPU back
    assert not storage.exists(LATEST)

    result = ingest(config, storage)  # the same ingest, no longer held
    assert result.rows == 40 and storage.exists(LATEST)
