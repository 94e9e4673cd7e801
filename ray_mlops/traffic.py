"""Realistic client traffic for the inference API, built from generated source files.

:func:`raw_records` turns a generated dataset (``ray-mlops generate``) into the raw
request records the HTTP API takes — every modality, exactly as batch ingestion read it
(so online features equal the feature table's) — with their labels. :class:`Traffic`
posts them to ``/predict`` from a few threads at a target rate and sends each label back
to ``/feedback``, counting every failure. :func:`land_batch` drops another generated
dataset into a data root (new labeled data arriving), renaming files so nothing clashes.

``scripts/traffic.py`` is the command-line front end.
"""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


# -- records ---------------------------------------------------------------------------
def _events_by_machine(root: Path) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for path in sorted((root / "events").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                event = json.loads(line)
                found.setdefault(event["machine_id"], []).append(event)
    return found


def _files_by_machine(folder: Path, pattern: str) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob(pattern)):
        found.setdefault(path.stem.rsplit("_", 1)[0], []).append(path)
    return found


def raw_records(root: str | Path, limit: int | None = None) -> tuple[list[dict], list[int]]:
    """``(records, labels)`` for the machines of a generated dataset under ``root``."""
    root = Path(root)
    machines = pd.read_csv(root / "machines.csv").merge(pd.read_parquet(root / "specs.parquet"), on="machine_id")
    machines = machines.merge(pd.read_csv(root / "labels.csv"), on="machine_id")
    if limit is not None:
        machines = machines.head(limit)
    events = _events_by_machine(root)
    notes = _files_by_machine(root / "notes", "*.txt")
    images = _files_by_machine(root / "images", "*.png")
    telemetry = pd.concat(pd.read_parquet(p) for p in sorted((root / "telemetry").glob("*.parquet")))
    readings = {mid: frame.sort_values("timestamp").drop(columns=["machine_id", "timestamp"]).to_dict("records")
                for mid, frame in telemetry.groupby("machine_id")}
    records = []
    for row in machines.itertuples(index=False):
        mid = row.machine_id
        records.append({
            "machine_id": mid, "model": row.model, "site": row.site, "age_years": float(row.age_years),
            "load_class": row.load_class, "rated_power_kw": float(row.rated_power_kw), "firmware": int(row.firmware),
            "events": events.get(mid, []),
            "notes": [p.read_text(encoding="utf-8") for p in notes.get(mid, [])],
            "images": [base64.b64encode(p.read_bytes()).decode() for p in images.get(mid, [])],
            "telemetry": readings.get(mid, []),
        })
    return records, machines["failed"].astype(int).tolist()


def land_batch(batch: str | Path, root: str | Path, tag: str) -> int:
    """Add the generated dataset ``batch`` to the data root ``root``; returns the machines added."""
    batch, root = Path(batch), Path(root)
    for name in ("machines.csv", "labels.csv"):
        merged = pd.concat([pd.read_csv(root / name), pd.read_csv(batch / name)], ignore_index=True)
        _replace(root / name, lambda tmp, m=merged: m.to_csv(tmp, index=False))
    specs = pd.concat([pd.read_parquet(root / "specs.parquet"), pd.read_parquet(batch / "specs.parquet")], ignore_index=True)
    _replace(root / "specs.parquet", lambda tmp: specs.to_parquet(tmp, index=False))
    for folder in ("events", "telemetry"):
        for path in sorted((batch / folder).iterdir()):
            shutil.copyfile(path, root / folder / f"{tag}-{path.name}")
    for folder in ("notes", "images"):
        for path in sorted((batch / folder).iterdir()):
            shutil.copyfile(path, root / folder / path.name)
    return len(pd.read_csv(batch / "labels.csv"))


def _replace(target: Path, write) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    write(tmp)
    tmp.replace(target)


# -- sending ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """One answered record: when, which pass over the records and which record, who answered, right or not."""

    time: float
    pass_index: int
    index: int
    version: str
    correct: bool


@dataclass
class TrafficStats:
    """What a traffic run saw."""

    requests: int = 0
    rows: int = 0
    failed: int = 0
    feedback: int = 0
    feedback_failed: int = 0
    versions: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    correct: Counter = field(default_factory=Counter)
    latencies_ms: list = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms) or [0.0]
        return {"requests": self.requests, "rows": self.rows, "failed": self.failed, "feedback": self.feedback,
                "feedback_failed": self.feedback_failed, "versions": dict(self.versions),
                "accuracy_by_version": {v: round(self.correct[v] / n, 4) for v, n in self.versions.items() if n},
                "p50_ms": round(lat[len(lat) // 2], 1), "p99_ms": round(lat[int(len(lat) * 0.99)], 1),
                "errors": dict(self.errors.most_common(3))}


class Traffic:
    """Threads posting batches of records (and their labels) at a target rate until stopped."""

    def __init__(self, url: str, *, per_request: int = 8, threads: int = 4, rate: float = 80.0,
                 feedback: bool = True, token: str | None = None, timeout_s: float = 30.0):
        self.url, self.per_request, self.threads, self.rate = url.rstrip("/"), per_request, threads, rate
        self.feedback, self.timeout_s = feedback, timeout_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.stats = TrafficStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._source: Iterator[tuple[list[dict], list[int]]] = iter(())

    def start(self, records: list[dict], labels: list[int], *, repeat: bool = False, limit: int | None = None) -> "Traffic":
        """Send ``records`` (cycled when ``repeat``, at most ``limit`` rows) in the background."""
        self._stop.clear()
        self._source = self._batches(records, labels, repeat, limit)
        self._workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def _batches(self, records, labels, repeat, limit):
        """(records, labels, pass index, index of the first record) of each request, in order."""
        sent, i, passes = 0, 0, 0
        while limit is None or sent < limit:
            if i >= len(records):
                if not repeat:
                    return
                i, passes = 0, passes + 1
            n = min(self.per_request, len(records) - i, (limit - sent) if limit is not None else self.per_request)
            yield records[i:i + n], labels[i:i + n], passes, i
            i, sent = i + n, sent + n

    def _next(self):
        with self._lock:
            return next(self._source, None)

    def _work(self) -> None:
        import requests

        interval = self.threads * self.per_request / self.rate if self.rate else 0.0
        with requests.Session() as session:
            while not self._stop.is_set():
                batch = self._next()
                if batch is None:
                    return
                started = time.monotonic()
                self._send(session, *batch)
                self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def _send(self, session: Any, records: list[dict], labels: list[int], pass_index: int = 0, first: int = 0) -> None:
        started = time.monotonic()
        try:
            response = session.post(f"{self.url}/predict", json={"instances": records}, headers=self.headers,
                                    timeout=self.timeout_s)
            body = response.json() if response.status_code == 200 else None
        except Exception as exc:  # counted as a failed request, never retried
            return self._count_failure(f"{type(exc).__name__}")
        if body is None:
            return self._count_failure(f"HTTP {response.status_code}: {response.text[:120]}")
        version, now = body["model_version"], time.time()
        right = [p == y for p, y in zip(body["predictions"], labels)]
        with self._lock:
            self.stats.requests += 1
            self.stats.rows += len(records)
            self.stats.versions[version] += len(records)
            self.stats.correct[version] += sum(right)
            self.stats.latencies_ms.append((time.monotonic() - started) * 1000)
            self.stats.answers += [Answer(now, pass_index, first + k, version, ok) for k, ok in enumerate(right)]
        if self.feedback:
            self._send_feedback(session, body["request_id"], labels)

    def _send_feedback(self, session: Any, request_id: str, labels: list[int]) -> None:
        try:
            response = session.post(f"{self.url}/feedback", json={"request_id": request_id, "labels": labels},
                                    headers=self.headers, timeout=self.timeout_s)
            ok = response.status_code == 200
        except Exception:
            ok = False
        with self._lock:
            self.stats.feedback += int(ok)
            self.stats.feedback_failed += int(not ok)

    def _count_failure(self, reason: str) -> None:
        with self._lock:
            self.stats.requests += 1
            self.stats.failed += 1
            self.stats.errors[reason] += 1

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until every record was sent (or ``timeout_s`` passed)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        self.wait(self.timeout_s + 5)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.stats.summary()

    def answers(self) -> list[Answer]:
        """Every answered record so far, in the order the answers came."""
        with self._lock:
            return list(self.stats.answers)


__all__ = ["Answer", "raw_records", "land_batch", "Traffic", "TrafficStats"]
