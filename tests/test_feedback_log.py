"""The replica's feedback log commits labels in groups: requests that arrive while a write is
in flight share the next file, each returns only once its labels are stored, and a failed
write fails every request it carried (no Ray: real files, a real event loop)."""

from __future__ import annotations

import asyncio
import threading

import pandas as pd
from ray_mlops.contracts import FEEDBACK_DIR, PartitionedWriter, read_partitioned
from ray_mlops.errors import StorageError
from ray_mlops.serve.predlog import FeedbackLog
from ray_mlops.storage import Storage


def _labels(request_id: str) -> pd.DataFrame:
    return pd.DataFrame({"request_id": request_id, "row": [0, 1], "label": [0, 1],
                         "time": pd.Timestamp("2026-12-02T10:00:00Z")})


class GatedWriter(PartitionedWriter):
    """A real writer whose first write waits until the test opens the gate."""

    def __init__(self, storage: Storage):
        super().__init__(storage, FEEDBACK_DIR, "w")
        self.entered, self.gate = threading.Event(), threading.Event()
        self.calls = 0

    def write(self, frame: pd.DataFrame) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            assert self.gate.wait(10)
        return super().write(frame)


def test_requests_during_a_write_share_the_next_file_and_each_waits_for_its_labels(tmp_path):
    storage = Storage(str(tmp_path))
    writer = GatedWriter(storage)

    async def scenario() -> None:
        log = FeedbackLog(writer)
        first = asyncio.create_task(log.write(_labels("a")))
        await asyncio.to_thread(writer.entered.wait, 10)
        later = [asyncio.create_task(log.write(_labels(r))) for r in ("b", "c", "d")]
        await asyncio.sleep(0)
        assert not any(t.done() for t in (first, *later))  # nothing acknowledged before it is stored
        writer.gate.set()
        await asyncio.wait_for(asyncio.gather(first, *later), 10)

    asyncio.run(scenario())
    stored = read_partitioned(storage, FEEDBACK_DIR)
    assert sorted(stored["request_id"]) == ["a", "a", "b", "b", "c", "c", "d", "d"]
    files = [rel for rel in storage.list(FEEDBACK_DIR, recursive=True) if rel.endswith(".parquet")]
    assert writer.calls == 2 and len(files) == 2  # "a" alone, then b, c and d in one file


class FailingOnce(PartitionedWriter):
    def __init__(self, storage: Storage):
        super().__init__(storage, FEEDBACK_DIR, "w")
        self.failed = False

    def write(self, frame: pd.DataFrame) -> list[str]:
        if not self.failed:
            self.failed = True
            raise StorageError("storage is down")
        return super().write(frame)


def test_a_failed_write_fails_every_request_it_carried_and_the_next_write_goes_through(tmp_path):
    storage = Storage(str(tmp_path))

    async def scenario() -> list:
        log = FeedbackLog(FailingOnce(storage))
        together = [log.write(_labels(r)) for r in ("a", "b")]
        outcomes = await asyncio.gather(*together, return_exceptions=True)
        await log.write(_labels("c"))
        return outcomes

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, StorageError) for o in outcomes), outcomes
    assert read_partitioned(storage, FEEDBACK_DIR)["request_id"].tolist() == ["c", "c"]


def test_a_lone_write_is_stored_as_sent(tmp_path):
    storage = Storage(str(tmp_path))
    asyncio.run(FeedbackLog(PartitionedWriter(storage, FEEDBACK_DIR, "w")).write(_labels("z")))
    stored = read_partitioned(storage, FEEDBACK_DIR)
    assert stored["label"].tolist() == [0, 1] and stored["request_id"].tolist() == ["z", "z"]
