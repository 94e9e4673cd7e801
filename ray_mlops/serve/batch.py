"""One model call for many requests: featurize a batch of jobs once, then score it.

A replica's batch path (:mod:`ray_mlops.serve.app`) is three steps, each a function here:

1. :func:`featurize` turns the raw records of every job of a batch into one set of
   :class:`~ray_mlops.data.schema.FeatureRows` (numpy, no frame), with the source
   plugins' online steps run once over all records; a job whose
   records are bad gets its own :class:`RecordError` and the others still go through;
2. :func:`predict` scores those rows with one served version in one call (a failing
   call is retried job by job, so one job's bad value fails that job only); a second
   version (a shadow) scores the same :class:`Batch` with another call, without
   featurizing again;
3. :func:`log_chunk` keeps what the prediction log needs; its frame is built later, in
   the log's flush thread (:meth:`LogChunk.frame`), not on the request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from ray_mlops.config import Config
from ray_mlops.data.online import RecordError, featurize_rows
from ray_mlops.data.schema import FeatureRows, FeatureSchema
from ray_mlops.serve.model import ServedModel


@dataclass
class Job:
    """One /predict request waiting for the model."""

    instances: list[dict]
    entities: list
    request_id: str


@dataclass
class Outcome:
    """A job's answer from one version: predictions (and probabilities), or the error."""

    predictions: list = field(default_factory=list)
    probabilities: Optional[list] = None
    version: str = ""
    error: Optional[Exception] = None


def job_rows(jobs: list) -> int:
    """Batch size in rows (``@serve.batch``'s ``batch_size_fn``)."""
    return sum(len(job.instances) for job in jobs)


@dataclass
class Batch:
    """Featurized jobs: ``features`` holds the rows of ``jobs[i]`` at ``spans[i]``, or ``errors[i]`` says why not."""

    jobs: list[Job]
    features: Optional[FeatureRows]
    spans: list[Optional[slice]]
    errors: list[Optional[Exception]]

    @property
    def rows(self) -> int:
        return 0 if self.features is None else len(self.features)


def _as_record_error(exc: Exception) -> RecordError:
    if isinstance(exc, RecordError):
        return exc
    return RecordError("instances", f"cannot featurize: {type(exc).__name__}: {exc}")  # the client's input


def _spans(sizes: list[int]) -> list[slice]:
    ends = np.cumsum(sizes).tolist()
    return [slice(end - size, end) for size, end in zip(sizes, ends)]


def featurize(config: Config, schema: FeatureSchema, jobs: list[Job]) -> Batch:
    """Every job's records featurized together; when that fails, job by job to find whose records are bad."""
    try:
        together = featurize_rows(config, [r for job in jobs for r in job.instances], schema)
        return Batch(jobs, together, _spans([len(job.instances) for job in jobs]), [None] * len(jobs))
    except Exception:
        pass
    frames: list[Optional[FeatureRows]] = []
    errors: list[Optional[Exception]] = []
    for job in jobs:
        try:
            frames.append(featurize_rows(config, job.instances, schema))
            errors.append(None)
        except Exception as exc:
            frames.append(None)
            errors.append(_as_record_error(exc))
    good = [f for f in frames if f is not None]
    spans = iter(_spans([len(f) for f in good]))
    features = FeatureRows.concat(good) if good else None
    return Batch(jobs, features, [None if f is None else next(spans) for f in frames], errors)


def _score(served: ServedModel, features: FeatureRows, spans: list[slice]) -> list[Outcome]:
    out = served.predict(features)
    return [Outcome(out.predictions[s], None if out.probabilities is None else out.probabilities[s], served.version)
            for s in spans]


def _score_alone(served: ServedModel, features: FeatureRows) -> Outcome:
    try:
        return _score(served, features, [slice(0, len(features))])[0]
    except Exception as exc:
        return Outcome(error=RecordError("instances", f"the model cannot score these instances: {type(exc).__name__}"))


def predict(served: ServedModel, batch: Batch) -> list[Outcome]:
    """One outcome per job of ``batch`` from ``served``: one model call, retried job by job if it fails."""
    spans = [s for s in batch.spans if s is not None]
    if batch.features is None:
        scored: list[Outcome] = []
    elif len(spans) == 1:
        scored = [_score_alone(served, batch.features)]
    else:
        try:
            scored = _score(served, batch.features, spans)
        except Exception:
            scored = [_score_alone(served, batch.features.take(s)) for s in spans]
    answers = iter(scored)
    return [Outcome(error=error) if error is not None else next(answers) for error in batch.errors]


@dataclass
class LogChunk:
    """The prediction-log rows of one scored batch, kept as they are until the log flushes them."""

    features: FeatureRows
    jobs: list[Job]
    outcomes: list[Outcome]
    version: str
    time: pd.Timestamp
    extra: dict[str, Any] = field(default_factory=dict)  # more log columns (a shadow's outputs): a value or one per row

    def __len__(self) -> int:
        return len(self.features)

    def columns(self) -> dict[str, list]:
        """The log columns after the features, one value per row: request id, row, entity, version,
        prediction, probabilities, time, then ``extra``."""
        jobs, outcomes, n = self.jobs, self.outcomes, len(self)
        probabilities = outcomes[0].probabilities is not None
        columns = {
            "request_id": [job.request_id for job in jobs for _ in job.instances],
            "row": [i for job in jobs for i in range(len(job.instances))],
            "entity": [None if e is None else str(e) for job in jobs for e in job.entities],
            "model_version": [self.version] * n,
            "prediction": [p for o in outcomes for p in o.predictions],
            "probabilities": [p for o in outcomes for p in o.probabilities] if probabilities else [None] * n,
            "time": [self.time] * n,
        }
        for name, value in self.extra.items():
            columns[name] = list(value) if isinstance(value, list) else [value] * n
        return columns

    def frame(self) -> pd.DataFrame:
        """The log rows: the features, then :meth:`columns`."""
        return LogChunk.frame_of([self])

    @staticmethod
    def frame_of(chunks: list["LogChunk"]) -> pd.DataFrame:
        """One frame of the rows of ``chunks`` (built once for all of them, not chunk by chunk)."""
        parts = [chunk.columns() for chunk in chunks]
        names = list(dict.fromkeys(name for part in parts for name in part))
        meta = {name: [v for chunk, part in zip(chunks, parts) for v in part.get(name, [None] * len(chunk))]
                for name in names}
        meta["time"] = pd.DatetimeIndex(meta["time"])
        frame = FeatureRows.concat([chunk.features for chunk in chunks]).frame()
        return pd.concat([frame, pd.DataFrame(meta, index=frame.index)], axis=1)


def log_chunk(batch: Batch, outcomes: list[Outcome], version: str) -> Optional[LogChunk]:
    """The log rows of the jobs ``version`` answered (None when it answered none)."""
    kept = [i for i, o in enumerate(outcomes) if o.error is None]
    if not kept or batch.features is None:
        return None
    if len(kept) == len(outcomes):
        features = batch.features
    else:
        rows = np.concatenate([np.arange(batch.spans[i].start, batch.spans[i].stop) for i in kept])
        features = batch.features.take(rows)
    return LogChunk(features, [batch.jobs[i] for i in kept], [outcomes[i] for i in kept], version,
                    pd.Timestamp.now(tz="UTC"))


__all__ = ["Batch", "Job", "LogChunk", "Outcome", "featurize", "job_rows", "log_chunk", "predict"]
