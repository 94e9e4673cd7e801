"""Ingestion on Ray Data: every source → one validated feature table.

Per source, streaming and in parallel blocks:

    read ─► record step (validate, featurize one record; rejects → quarantine)
         ─► hash-partition by entity key ─► entity step (one row per entity)

then a full outer join of all sources on the entity key, a last check (every row has a
label), and the table, reference sample, profile and report are written under
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

from ray_mlops.config import Config
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
BUCKET = "_bucket"
SOURCE = "_source"
COUNTS = "_counts"
BUCKET_BYTES = 32 << 20


# -- the record and entity steps ----------------------------------------------------
def bucket_of(keys: pd.Series, buckets: int) -> np.ndarray:
    """A stable bucket per key (the same in every process and on every machine)."""
    hashed = pd.util.hash_pandas_object(keys.astype(str), index=False).to_numpy()
    return (hashed % np.uint64(buckets)).astype("int64")


class _RecordStep:
    """A picklable map_batches callable: a source's record step, rejects to the quarantine, counts to ``recorder``."""

    def __init__(self, source: SourceType, quarantine: Quarantine, buckets: int, recorder: Recorder):
        self.source, self.quarantine, self.buckets, self.recorder = source, quarantine, buckets, recorder

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        good, rejects = self.source.records(batch)
        self.quarantine.write(rejects)
        files = batch["path"].nunique() if "path" in batch else 0
        self.recorder.add(self.source.name, int(files), len(good), len(rejects))
        good[BUCKET] = bucket_of(good[self.source.key], self.buckets)
        good[SOURCE] = self.source.name
        return good


@dataclass(frozen=True)
class Staging:
    """Where and how records are staged: the quarantine, the staging folder, the bucket count, the progress recorder."""

    quarantine: Quarantine
    storage: Storage
    buckets: int
    recorder: Recorder = field(default_factory=lambda: Recorder(None))


def staged_records(source: SourceType, listed: SourceFiles, staging: Staging) -> ray.data.Dataset:
    """One source read with Ray Data → its good records, tagged with source and bucket.

    A file source's record step fuses with its read, and a fused batch size is also the
    minimum number of *input* rows (chunks of files) per task: such sources use
    ``record_batch_size = None`` (one read task's output) so they run on every core.
    """
    step = _RecordStep(source, staging.quarantine, staging.buckets, staging.recorder)
    records = source.read(listed).map_batches(step, batch_format="pandas", batch_size=source.record_batch_size)
    return source.after_records(records)


def stage_all(sources: list[SourceType], listed: dict[str, SourceFiles], staging: Staging) -> None:
    """Read every source in one Ray Data execution; write records by source and key bucket."""
    parts = [staged_records(s, listed[s.name], staging) for s in sources]
    combined = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    combined.write_parquet(staging.storage.path(), filesystem=staging.storage.fs, partition_cols=[SOURCE, BUCKET])


def _read_bucket(staging: Storage, source: str, bucket: int) -> pd.DataFrame | None:
    folder = f"{SOURCE}={source}/{BUCKET}={bucket}"
    if not staging.exists(folder):
        return None
    dataset = pads.dataset(staging.path(folder), filesystem=staging.fs, format="parquet")
    return dataset.to_table().to_pandas()


class _BucketStep:
    """One bucket of every source → entity rows per source → merged, checked feature rows."""

    def __init__(self, sources: list[SourceType], schema: FeatureSchema, staging: Storage, quarantine: Quarantine):
        self.sources, self.schema, self.staging, self.quarantine = sources, schema, staging, quarantine

    def __call__(self, batch: dict[str, np.ndarray]) -> pd.DataFrame:
        parts = [self._bucket(int(b)) for b in batch["id"]]
        return pd.concat(parts, ignore_index=True)

    def _bucket(self, bucket: int) -> pd.DataFrame:
        key = self.schema.entity_key
        accepted, merged = {}, pd.DataFrame({key: pd.Series(dtype=object)})
        for source in self.sources:
            entities = self._entities(source, bucket)
            accepted[source.name] = source.accepted(entities)
            merged = merged.merge(entities, on=key, how="outer")
        self.staging.write_json(f"{COUNTS}/{bucket}.json", accepted)
        return self._finish(merged)

    def _entities(self, source: SourceType, bucket: int) -> pd.DataFrame:
        key = self.schema.entity_key
        staged = _read_bucket(self.staging, source.name, bucket)
        if staged is None:
            return pd.DataFrame({key: pd.Series(dtype=object)})
        rows, rejects = source.entities(staged.drop(columns=[BUCKET, SOURCE], errors="ignore"))
        self.quarantine.write(rejects)
        return rows

    def _finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        label = self.schema.label
        if label not in frame:
            frame[label] = np.nan
        unlabeled = frame[label].isna()
        reasons = [f"{label}: missing (entity has no label)"] * int(unlabeled.sum())
        self.quarantine.write(reject_frame(ENTITY_SOURCE, reasons, frame[unlabeled].to_dict("records")))
        ordered = frame[~unlabeled].sort_values(self.schema.entity_key, kind="stable")
        return cast_features(ordered, self.schema)


def build_table(sources: list[SourceType], schema: FeatureSchema, staging: Staging) -> ray.data.Dataset:
    """Every bucket in parallel with Ray Data → the feature table (not yet executed)."""
    step = _BucketStep(sources, schema, staging.storage, staging.quarantine)
    buckets = staging.buckets
    return ray.data.range(buckets, override_num_blocks=buckets).map_batches(step, batch_size=1, batch_format="numpy")


def _bucket_count(listed: dict[str, SourceFiles]) -> int:
    """Enough buckets to keep every core busy and each bucket's records small."""
    total = sum(files.size for files in listed.values())
    cpus = int(ray.cluster_resources().get("CPU", 2))
    return max(cpus, min(512, total // BUCKET_BYTES + 1))


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

    @property
    def folder(self) -> str:
        return f"{FEATURES_DIR}/{self.fingerprint}/{self.run}"  # fresh: never a folder a pointer may name


def _plan(config: Config) -> _Plan:
    listed = list_sources(config)
    run = f"run-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    spine = config.data.label_source
    sources = sources_of(config)
    ordered = [s for s in sources if s.settings is spine] + [s for s in sources if s.settings is not spine]
    return _Plan(feature_schema(config), ordered, listed, fingerprint_sources(config, listed), run)


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
    """Stage every source's records, build the table from them; the accepted records per source."""
    staging_storage = storage.child(plan.folder, "staging")
    buckets = _bucket_count(plan.listed)
    progress("ingest: reading %d sources (%d files)", len(plan.sources), sum(len(f.paths) for f in plan.listed.values()))
    try:
        with _unreserved_operators(), quiet_cpu_warning():
            with LiveCounts([s.name for s in plan.sources]) as live:
                staging = Staging(quarantine, staging_storage, buckets, live.recorder)
                stage_all(plan.sources, plan.listed, staging)
            progress("ingest: records staged; joining %d buckets into the feature table", buckets)
            table = build_table(plan.sources, plan.schema, staging)
            table.write_parquet(storage.path(plan.folder, "table"), filesystem=storage.fs)
        return _sum_counts(staging_storage, buckets)
    except ray.exceptions.RayError as exc:
        raise DataError(f"ingest failed: {_root_cause(exc)}") from exc
    finally:
        staging_storage.delete("")


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
def _unreserved_operators() -> Iterator[None]:
    """Ray Data without per-operator resource reservations, for the ingest's executions.

    A reservation holds CPUs back for each operator of a plan (here seven sources, their
    union and the write); on a small cluster that leaves the one busy source a single core
    while the reserved ones sit idle.
    """
    context = ray.data.DataContext.get_current()
    previous = context.op_resource_reservation_enabled
    context.op_resource_reservation_enabled = False
    try:
        yield
    finally:
        context.op_resource_reservation_enabled = previous


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


def _sum_counts(staging: Storage, buckets: int) -> dict[str, int]:
    total: dict[str, int] = {}
    for bucket in range(buckets):
        for name, count in staging.read_json(f"{COUNTS}/{bucket}.json").items():
            total[name] = total.get(name, 0) + int(count)
    return total


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


__all__ = ["ingest", "profile_of", "stage_all", "build_table"]
