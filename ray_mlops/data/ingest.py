"""Ingestion on Ray Data: every source → one validated feature table.

Per source, streaming and in parallel blocks:

    read ─► record step (validate, featurize one record; rejects → quarantine)
         ─► pack (the records by entity bucket, :mod:`ray_mlops.data.buckets`)

then one hash shuffle by bucket of all sources together (Ray Data ``repartition(keys=...)``),
per output block each source's entity step (one row per entity; its rejects → quarantine)
and their full outer join on the key, and a last check (every row has a label), all in one
streaming execution. The table, reference sample, profile and report are written under
``features/<fingerprint>/``. ``features/latest.json`` is replaced only after everything
else succeeded. Nothing is collected on the driver but counts and a bounded sample.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray
import ray.data
import ray.exceptions
from ray.data.exceptions import ExecutionTimeoutError

from ray_mlops.config import Config
from ray_mlops.data.buckets import BUCKET, Buckets, JoinStep, Pack
from ray_mlops.data.fingerprint import SourceFiles, fingerprint_sources, list_sources
from ray_mlops.data.live_counts import LiveCounts, Recorder
from ray_mlops.data.quarantine import Quarantine, reject_frame
from ray_mlops.progress import quiet_cpu_warning, report as progress
from ray_mlops.data.sources import SourceType, sources_of
from ray_mlops.data.schema import FEATURES_DIR, LATEST, FeatureSchema, IngestResult, cast_features, feature_schema
from ray_mlops.errors import DataError, RejectRateError
from ray_mlops.storage import Storage

log = logging.getLogger(__name__)

ENTITY_SOURCE = "entities"
COUNTS = "_counts"
#: Bytes of input per partition of the shuffle by bucket (at least one partition per CPU).
PARTITION_BYTES = 64 << 20
MAX_PARTITIONS = 256
#: Packed bytes per shuffle map task (per node).
SHUFFLE_BATCH_BYTES = 64 << 20
#: Buckets per partition: the shuffle hashes bucket numbers, so more of them spread the entities evenly.
BUCKETS_PER_PARTITION = 16


# -- the record and entity steps ----------------------------------------------------
class _RecordStep:
    """A picklable map_batches callable: a source's record step, rejects to the quarantine, counts to ``recorder``."""

    def __init__(self, source: SourceType, quarantine: Quarantine, recorder: Recorder):
        self.source, self.quarantine, self.recorder = source, quarantine, recorder

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        good, rejects = self.source.records(batch)
        self.quarantine.write(rejects)
        files = batch["path"].nunique() if "path" in batch else 0
        self.recorder.add(self.source.name, int(files), len(good), len(rejects))
        return good


class _Finish:
    """Joined entity rows → labeled rows in the schema's columns; the unlabeled ones to the quarantine."""

    def __init__(self, schema: FeatureSchema, quarantine: Quarantine):
        self.schema, self.quarantine = schema, quarantine

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        label = self.schema.label
        if label not in frame:
            frame[label] = np.nan
        unlabeled = frame[label].isna()
        reasons = [f"{label}: missing (entity has no label)"] * int(unlabeled.sum())
        self.quarantine.write(reject_frame(ENTITY_SOURCE, reasons, frame[unlabeled].to_dict("records")))
        ordered = frame[~unlabeled].sort_values(self.schema.entity_key, kind="stable")
        return cast_features(ordered, self.schema)


@dataclass(frozen=True)
class Steps:
    """What the steps write besides their rows: the quarantine, the accepted counts, the progress recorder."""

    quarantine: Quarantine
    counts: Storage
    recorder: Recorder = field(default_factory=lambda: Recorder(None))


def packed_records(source: SourceType, listed: SourceFiles, steps: Steps, buckets: Buckets) -> ray.data.Dataset:
    """One source read with Ray Data → its good records packed by entity bucket (not yet executed).

    read → record step → (its batch stages) → pack. A file source's record step fuses with
    its read, and a fused batch size is also the minimum number of *input* rows (chunks of
    files) per task: such sources use ``record_batch_size = None`` (one read task's output).
    """
    step = _RecordStep(source, steps.quarantine, steps.recorder)
    records = source.read(listed).map_batches(step, batch_format="pandas", batch_size=source.record_batch_size)
    return source.after_records(records).map_batches(Pack(source.name, buckets), batch_format="pyarrow", batch_size=None)


def build_table(sources: list[SourceType], listed: dict[str, SourceFiles], schema: FeatureSchema,
                steps: Steps) -> ray.data.Dataset:
    """Every source's entity rows, full-outer joined on the key, checked (not yet executed).

    One hash shuffle for all sources: their packed records (one shared schema) are unioned
    and shuffled by bucket, so each output block holds every record of its entities.
    """
    partitions = _partitions(sum(files.size for files in listed.values()))
    buckets = Buckets(partitions * BUCKETS_PER_PARTITION, schema.entity_key)
    packed = [packed_records(s, listed[s.name], steps, buckets) for s in sources]
    union = packed[0].union(*packed[1:]) if len(packed) > 1 else packed[0]
    joined = union.repartition(partitions, keys=[BUCKET]).map_batches(
        JoinStep(sources, steps.quarantine, steps.counts), batch_format="pyarrow", batch_size=None)
    return joined.map_batches(_Finish(schema, steps.quarantine), batch_format="pandas", batch_size=None)


def _partitions(size: int) -> int:
    """Partitions of a shuffle of ``size`` input bytes: every core busy, each partition's records small."""
    cpus = int(ray.cluster_resources().get("CPU", 2))
    return max(cpus, min(MAX_PARTITIONS, size // PARTITION_BYTES + 1))


def _reject_rate_problems(counts: dict[str, dict[str, int]], limit: float) -> list[str]:
    problems = []
    for name, c in counts.items():
        total = c["read"]
        if total and c["quarantined"] / total > limit:
            problems.append(f"{name}: {c['quarantined']} of {total} quarantined ({c['quarantined'] / total:.1%})")
    return problems


def profile_of(reference: pd.DataFrame, schema: FeatureSchema) -> dict[str, Any]:
    """Per-feature summaries of the reference sample (kinds, location, spread, levels, missing)."""
    features: dict[str, Any] = {}
    for name, kind in schema.features.items():
        column = reference[name]
        summary: dict[str, Any] = {"kind": kind, "missing": float(column.isna().mean())}
        if kind == "numeric":
            summary.update(mean=_finite(column.mean()), std=_finite(column.std()), min=_finite(column.min()), max=_finite(column.max()))
        else:
            summary["levels"] = {str(k): float(v) for k, v in column.value_counts(normalize=True).items()}
        features[name] = summary
    return features


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def _write_reference(storage: Storage, folder: str, schema: FeatureSchema, size: int, rows: int) -> pd.DataFrame:
    """A seeded random sample of at most ``size`` rows, streamed from the written table."""
    dataset = pads.dataset(storage.path(folder, "table"), filesystem=storage.fs, format="parquet")
    rng = np.random.default_rng(0)
    fraction = min(1.0, 1.5 * size / max(rows, 1))
    kept = [batch.filter(pa.array(rng.random(batch.num_rows) < fraction)) for batch in dataset.to_batches()]
    sample = pa.Table.from_batches(kept, schema=dataset.schema).slice(0, size)
    reference = cast_features(sample.to_pandas(), schema)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(reference, preserve_index=False), sink)
    storage.write_bytes(f"{folder}/reference.parquet", sink.getvalue().to_pybytes())
    return reference


# -- the stage ----------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    """One ingest run, decided before anything is read: its sources (label source first), files and run folder."""

    schema: FeatureSchema
    sources: list[SourceType]
    listed: dict[str, SourceFiles]
    fingerprint: str
    run: str
    stall_timeout_s: float

    @property
    def folder(self) -> str:
        return f"{FEATURES_DIR}/{self.fingerprint}/{self.run}"  # fresh: never a folder a pointer may name


def _plan(config: Config) -> _Plan:
    listed = list_sources(config)
    run = f"run-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    spine = config.data.label_source
    sources = sources_of(config)
    ordered = [s for s in sources if s.settings is spine] + [s for s in sources if s.settings is not spine]
    return _Plan(feature_schema(config), ordered, listed, fingerprint_sources(config, listed), run,
                 config.data.stall_timeout_s)


def ingest(config: Config, storage: Storage) -> IngestResult:
    """Build the feature table, reference sample, profile and report for ``config``'s sources.

    Raises :class:`DataError` for missing or malformed sources and :class:`RejectRateError`
    when a source's quarantined share passes ``data.max_reject_rate``; in both cases the
    previous ``features/latest.json`` stays in place.
    """
    started = time.monotonic()
    ray.data.DataContext.get_current().enable_progress_bars = False
    plan = _plan(config)
    quarantine = Quarantine(storage, f"{plan.folder}/quarantine")
    accepted = _write_table(plan, storage, quarantine)
    rows = _table_rows(storage, plan.folder)
    counts = _count_summary(plan.sources, accepted, quarantine.counts(), rows)
    for name, c in counts.items():
        progress("ingest: %s done: read %d, accepted %d, quarantined %d", name, c["read"], c["accepted"], c["quarantined"])
    report = {"fingerprint": plan.fingerprint, "rows": rows, "sources": counts, "seconds": round(time.monotonic() - started, 2)}
    _check_reject_rates(storage, plan.folder, report, config.data.max_reject_rate)
    return _publish(storage, plan, IngestResult(plan.fingerprint, plan.schema, rows, counts, plan.run), report,
                    config.data.reference_sample)


def _write_table(plan: _Plan, storage: Storage, quarantine: Quarantine) -> dict[str, int]:
    """Read, featurize and join every source in one Ray Data execution; the accepted records per source."""
    counts = storage.child(plan.folder, COUNTS)
    progress("ingest: reading %d sources (%d files)", len(plan.sources), sum(len(f.paths) for f in plan.listed.values()))
    try:
        with _execution_settings(plan.stall_timeout_s), quiet_cpu_warning():
            with LiveCounts([s.name for s in plan.sources]) as live:
                table = build_table(plan.sources, plan.listed, plan.schema, Steps(quarantine, counts, live.recorder))
                table.write_parquet(storage.path(plan.folder, "table"), filesystem=storage.fs)
            progress("ingest: records read and joined into the feature table")
        return _sum_counts(counts, plan.sources)
    except ray.exceptions.RayError as exc:
        raise DataError(f"ingest failed: {_root_cause(exc)}") from exc
    except ExecutionTimeoutError as exc:
        raise DataError(f"ingest made no progress for {plan.stall_timeout_s:g} s (data.stall_timeout_s) and was "
                        f"stopped; nothing was published: {str(exc).splitlines()[0]}") from exc
    finally:
        counts.delete("")


def _publish(storage: Storage, plan: _Plan, result: IngestResult, report: dict[str, Any], sample: int) -> IngestResult:
    """Reference sample, profile and report into the run folder, verified; then the one pointer moves."""
    reference = _write_reference(storage, plan.folder, plan.schema, sample, result.rows)
    storage.write_json(
        f"{plan.folder}/profile.json",
        {"schema": plan.schema.to_dict(), "fingerprint": plan.fingerprint, "rows": result.rows,
         "features": profile_of(reference, plan.schema)},
    )
    storage.write_json(f"{plan.folder}/report.json", {**report, "status": "ok"})
    _verify_run(storage, result)
    storage.write_json(LATEST, result.to_dict())  # the one pointer moves last
    return result


def _verify_run(storage: Storage, result: IngestResult) -> None:
    """A complete run: every output present and the table holds the rows counted."""
    missing = [n for n in ("profile.json", "report.json", "reference.parquet") if not storage.exists(f"{result.folder}/{n}")]
    if missing or _table_rows(storage, result.folder) != result.rows:
        raise DataError(f"ingest run {storage.uri(result.folder)} is incomplete ({', '.join(missing) or 'table rows'}); "
                        "features/latest.json not moved")


@contextmanager
def _execution_settings(stall_timeout_s: float) -> Iterator[None]:
    """Ray Data for the ingest's execution: no per-operator reservations, a streaming shuffle, a bounded stall.

    A reservation holds CPUs back for each operator of a plan (here seven sources, the
    shuffle and the write); on a small cluster that leaves the one busy source a single core
    while the reserved ones sit idle. The shuffle's map tasks start on every
    ``SHUFFLE_BATCH_BYTES`` of packed records (Ray Data's default, 1 GiB per node, holds
    them all back on a small cluster until the reads end, then partitions everything in one
    task) and keep their shards uncompressed (CPU, not the network, is what a small cluster
    lacks). Ray Data's no-progress guard (30 minutes by default) is set to
    ``data.stall_timeout_s``.
    """
    context = ray.data.DataContext.get_current()
    settings = {"op_resource_reservation_enabled": False, "execution_no_progress_timeout_s": stall_timeout_s,
                "shuffle_input_batch_bytes": SHUFFLE_BATCH_BYTES, "shuffle_compression": None}
    previous = {name: getattr(context, name) for name in settings}
    for name, value in settings.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            setattr(context, name, value)


_RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?([A-Za-z_]\w*(?:Error|Exception|Exit)): (.+)$")
_WRAPPERS = ("RayTaskError", "UserCodeException", "RayError")


def _root_cause(exc: BaseException) -> str:
    """The innermost error of a failed Ray task, in one line (``RuntimeError: what went wrong``).

    Ray Data wraps a failure inside a task (``UserCodeException: UDF failed to process a
    data block``); the original exception survives in the remote traceback's text.
    """
    texts = []
    while exc is not None:
        texts.append(getattr(exc, "traceback_str", "") or "")
        texts.append(str(exc))
        inner = getattr(exc, "cause", None) if isinstance(exc, ray.exceptions.RayTaskError) else None
        inner = inner if isinstance(inner, BaseException) and inner is not exc else exc.__cause__
        if inner is None:
            break
        exc = inner
    for text in texts:
        for line in text.splitlines():
            match = _RAISED.match(line.strip())
            if match and match.group(1) not in _WRAPPERS:
                return f"{match.group(1)}: {match.group(2)}"
    message = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _sum_counts(counts: Storage, sources: list[SourceType]) -> dict[str, int]:
    """The accepted records per source: the sum of its entity step's count files."""
    return {s.name: sum(int(counts.read_json(f"{s.name}/{f}")) for f in counts.list(s.name)) for s in sources}


def _table_rows(storage: Storage, folder: str) -> int:
    if not storage.exists(f"{folder}/table"):
        return 0
    dataset = pads.dataset(storage.path(folder, "table"), filesystem=storage.fs, format="parquet")
    return dataset.count_rows()


def _check_reject_rates(storage: Storage, folder: str, report: dict[str, Any], limit: float) -> None:
    problems = _reject_rate_problems(report["sources"], limit)
    if problems:
        storage.write_json(f"{folder}/report.json", {**report, "status": "failed", "problems": problems})
        raise RejectRateError(
            f"reject rate above {limit:.1%}: {'; '.join(problems)} (see {storage.uri(folder, 'quarantine')})"
        )
    if report["rows"] == 0:
        storage.write_json(f"{folder}/report.json", {**report, "status": "failed"})
        raise DataError("the feature table is empty: no entity has both a label and valid data")


def _count_summary(ordered: list[SourceType], accepted: dict[str, int], rejected: dict[str, dict[str, int]], rows: int) -> dict[str, dict[str, Any]]:
    counts: dict[str, dict[str, Any]] = {}
    for source in ordered:
        reasons = rejected.get(source.name, {})
        quarantined = sum(reasons.values())
        counts[source.name] = {
            "read": accepted[source.name] + quarantined,
            "accepted": accepted[source.name],
            "quarantined": quarantined,
            "reasons": reasons,
        }
    entity_reasons = rejected.get(ENTITY_SOURCE, {})
    counts[ENTITY_SOURCE] = {
        "read": rows + sum(entity_reasons.values()),
        "accepted": rows,
        "quarantined": sum(entity_reasons.values()),
        "reasons": entity_reasons,
    }
    return counts


__all__ = ["ingest", "profile_of", "packed_records", "build_table"]
