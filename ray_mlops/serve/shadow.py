"""A shadow version in the replica: the candidate predicts beside production, only logged.

``reconfigure({"version": "v3", "shadow": "v4"})`` loads ``v4`` beside ``v3`` in every
replica (:class:`ShadowSlot`). Each batch is featurized once; production predicts and
answers; the shadow predicts on the *same* feature rows and its outputs go into the
prediction log beside production's (:data:`ray_mlops.contracts.SHADOW_COLUMNS`), where the
monitor joins them to the labels that come back (docs/ARCHITECTURE.md, "Shadow and canary").

Faults never reach the client:

- a shadow that fails to load leaves production serving alone; ``/health`` reports the
  error (``status: degraded``, ``shadow.error``) until the next reconfigure;
- a shadow that raises (or answers with the wrong number of rows) on a batch is dropped
  from that batch: the rows are logged without shadow outputs, the failure is logged and
  counted (``failed_batches``, the ``ray_mlops_shadow_failures`` metric).

**Canary** (``serve.canary_fraction`` > 0, off by default): the requests whose id hashes
below the fraction (:func:`canary_share`) get the shadow's answer instead of production's
(``model_version`` names the shadow); their log rows say ``canary: true`` and keep
production's prediction beside the shadow's, so the monitor can test the canary rows
(:meth:`ShadowSlot.answer_canaries`). A batch the shadow was dropped from answers with
production.

>>> slot = ShadowSlot(load=lambda ref: None)
>>> slot.health()
{'version': None, 'requested': None, 'error': None, 'batches': 0, 'failed_batches': 0}
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from typing import Any, Callable

from ray_mlops.errors import ServingError
from ray_mlops.serve.batch import Job, LogChunk, Outcome
from ray_mlops.serve.model import ServedModel

log = logging.getLogger("ray.serve")


def canary_share(request_id: str) -> float:
    """Where a request falls in [0, 1): the sha1 of its id (the same id always falls the same side).

    >>> 0.0 <= canary_share("a1.2.b3") < 1.0, canary_share("x") == canary_share("x")
    (True, True)
    """
    return int(hashlib.sha1(f"canary:{request_id}".encode()).hexdigest()[:8], 16) / 2 ** 32


class ShadowSlot:
    """At most one shadow version of a replica, and what happened to it.

    ``load(ref) -> ServedModel`` loads, verifies and warms up a version (raises
    :class:`ServingError`); ``on_failure(version)`` is told about each failed batch (metrics).
    """

    def __init__(self, load: Callable[[str], ServedModel], on_failure: Callable[[str], None] = lambda version: None):
        self.load, self.on_failure = load, on_failure
        self.model: ServedModel | None = None
        self.requested: str | None = None
        self.error: dict[str, Any] | None = None
        self.batches = 0
        self.failed_batches = 0

    async def follow(self, ref: str | None) -> None:
        """Load ``ref`` as the shadow (None: no shadow); a failure leaves no shadow and is reported."""
        if ref == self.requested and (self.model is not None or ref is None):
            return
        self.requested, self.error = ref, None
        if ref is None:
            self._set(None)
            return
        try:
            loaded = await asyncio.to_thread(self.load, ref)
        except ServingError as exc:
            self._set(None)
            self.error = {"version": ref, "error": str(exc), "time": time.time()}
            log.error("shadow %s failed to load; production serves alone: %s", ref, exc)
            return
        self._set(loaded)

    def _set(self, model: ServedModel | None) -> None:
        previous, self.model = self.model, model
        if (previous and previous.version) != (model and model.version):
            log.info("shadow: %s (was %s)", model and model.version, previous and previous.version)

    def take(self, version: str) -> ServedModel | None:
        """The shadow, when production is being swapped to it (promotion reuses the loaded model)."""
        model = self.model
        return model if model is not None and model.version == version else None

    def annotate(self, chunk: LogChunk | None) -> None:
        """Add the shadow's outputs on the log rows' features (the batch's own, not featurized again); never raises."""
        model = self.model
        if model is None or chunk is None or not len(chunk):
            return
        self.batches += 1
        try:
            out = model.predict(chunk.features)
            if len(out.predictions) != len(chunk):
                raise ServingError(f"{len(out.predictions)} predictions for {len(chunk)} rows")
        except Exception as exc:  # the shadow's own problem: dropped from this batch, never the request's
            self.failed_batches += 1
            log.warning("shadow %s dropped from a batch of %d rows: %s: %s", model.version, len(chunk),
                        type(exc).__name__, exc)
            self.on_failure(model.version)
            return
        chunk.extra.update(shadow_version=model.version, shadow_prediction=out.predictions,
                           shadow_probabilities=out.probabilities)

    def answer_canaries(self, chunk: LogChunk | None, jobs: list[Job], outcomes: list[Outcome],
                        fraction: float) -> list[Outcome]:
        """``outcomes``, with the shadow's answer for the canary jobs (request-id hash below ``fraction``).

        Needs the shadow's outputs on this batch (:meth:`annotate`); the log rows get ``canary``.
        """
        if chunk is None or fraction <= 0 or "shadow_prediction" not in chunk.extra:
            return outcomes
        shadow, answers, flags, start = chunk.extra, {}, [], 0
        for job in chunk.jobs:
            end = start + len(job.instances)
            canary = canary_share(job.request_id) < fraction
            if canary:
                probabilities = shadow["shadow_probabilities"]
                answers[id(job)] = (shadow["shadow_prediction"][start:end],
                                    None if probabilities is None else probabilities[start:end])
            flags += [canary] * (end - start)
            start = end
        chunk.extra["canary"] = flags
        version = shadow["shadow_version"]
        return [dataclasses.replace(o, predictions=answers[id(j)][0], probabilities=answers[id(j)][1], version=version)
                if id(j) in answers else o for j, o in zip(jobs, outcomes)]

    def health(self) -> dict[str, Any]:
        """What ``/health`` shows under ``shadow``."""
        return {"version": self.model.version if self.model else None, "requested": self.requested,
                "error": self.error, "batches": self.batches, "failed_batches": self.failed_batches}


__all__ = ["ShadowSlot"]
