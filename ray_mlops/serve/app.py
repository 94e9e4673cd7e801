"""The Serve application: a FastAPI-ingress deployment serving one registry version.

Routes (see docs/ARCHITECTURE.md, the HTTP contract): ``POST /predict``, ``POST /feedback``, ``GET /health``,
``GET /model``; OpenAPI at ``/openapi.json``. The request schema is built from the
config's sources (:mod:`ray_mlops.serve.schemas`), so each project gets its own.

Inside a replica:

- concurrent small requests are featurized once and predicted together (``@serve.batch``,
  counting rows; the steps are :mod:`ray_mlops.serve.batch`), on one worker thread so
  the event loop keeps accepting requests;
- ``reconfigure({"version": "v7"})`` loads, verifies and warms up that version off the
  event loop, then swaps one reference: a batch uses the version it started with, and
  every response names it. A version that fails leaves the old one serving; the error
  shows in ``/health`` and the replica log;
- ``reconfigure({"version": "v7", "shadow": "v8"})`` also loads ``v8`` as a shadow: it
  predicts on the same feature rows of every logged batch beside production, only
  logged (:mod:`ray_mlops.serve.shadow`);
- every prediction goes to the bounded prediction log (:mod:`ray_mlops.serve.predlog`),
  whose rows are built in its flush thread.

The HTTP layer (the guard, errors naming the field) is :mod:`ray_mlops.serve.http_api`;
the metrics are :mod:`ray_mlops.serve.metrics`.

No ``from __future__ import annotations`` here: FastAPI reads the route annotations,
which refer to request models created at build time.
"""

import asyncio
import functools
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import pandas as pd
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from ray import serve

from ray_mlops.config import Config, config_from_dict
from ray_mlops.data.online import RecordError
from ray_mlops.data.schema import feature_schema
from ray_mlops.errors import ServingError
from ray_mlops.registry import Registry
from ray_mlops.serve import batch as batching
from ray_mlops.serve import predlog
from ray_mlops.serve.batch import Job, Outcome, job_rows
from ray_mlops.serve.http_api import field_path, http_error, make_api
from ray_mlops.serve.ids import RequestIds
from ray_mlops.serve.metrics import metrics, record_outcomes
from ray_mlops.serve.model import ServedModel, load_version
from ray_mlops.serve.shadow import ShadowSlot
from ray_mlops.serve.schemas import ErrorResponse, FeedbackResponse, HealthResponse, PredictResponse, request_models
from ray_mlops.storage import Storage

log = logging.getLogger("ray.serve")

DEPLOYMENT_NAME = "Predictor"


def _replica_name() -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside a replica (unit use)
        return f"local-{os.getpid()}"


class ModelServer:
    """Everything a replica does, independent of the HTTP routes bound to it."""

    def __init__(self, config: dict, secret: str):
        self.config: Config = config_from_dict(config, origin="serve deployment args")
        self.schema = feature_schema(self.config)
        self.storage = Storage(self.config.storage)
        self.registry = Registry(self.storage, self.config.model_name)
        self.ids = RequestIds(secret.encode())
        self._body_schema = TypeAdapter(request_models(self.config).predict)
        self.replica = _replica_name()
        self.writer_id = f"{self.replica}-{uuid.uuid4().hex[:8]}"
        self.serving: Optional[ServedModel] = None
        self.swap_error: Optional[dict] = None
        self.shadow = ShadowSlot(functools.partial(load_version, self.registry, schema=self.schema),
                                 lambda version: metrics()["shadow_failures"].inc(1, {"version": version}))
        self._compute_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._feedback = predlog.FeedbackLog(predlog.PartitionedWriter(self.storage, predlog.FEEDBACK_DIR, self.writer_id))
        self.log = self._prediction_log()
        self._flusher = asyncio.get_running_loop().create_task(self.log.run())
        self._check_meta_names()

    def _prediction_log(self) -> predlog.PredictionLog:
        cfg = self.config.serve
        enabled = cfg.prediction_log
        writer = predlog.PartitionedWriter(self.storage, predlog.PREDICTIONS_DIR, self.writer_id) if enabled else None
        monitor = predlog.MonitorLink(self.config.ray.namespace) if enabled else None
        return predlog.PredictionLog(writer, monitor, capacity=cfg.log_buffer_rows, flush_rows=cfg.log_flush_rows,
                                     interval_s=cfg.log_flush_interval_s, on_event=self._log_event)

    def _check_meta_names(self) -> None:
        clash = sorted(set(predlog.META_COLUMNS + predlog.SHADOW_COLUMNS) & set(self.schema.features))
        if clash:
            raise ServingError(f"features {clash} collide with prediction log columns")

    @staticmethod
    def _log_event(kind: str, n: int) -> None:
        if kind in ("flushed", "dropped"):
            metrics()["log"].inc(n, {"outcome": kind})

    # -- model versions -------------------------------------------------------------
    async def reconfigure(self, user_config: dict) -> None:
        """Serve calls this with ``user_config`` at start and on every change."""
        user_config = user_config or {}
        await self._serve_version(str(user_config.get("version", "production")))
        shadow = user_config.get("shadow")
        await self.shadow.follow(None if shadow is None else str(shadow))

    async def _serve_version(self, ref: str) -> None:
        if self.serving is not None and ref == self.serving.version:
            return
        try:
            loaded = self.shadow.take(ref) or await asyncio.to_thread(load_version, self.registry, ref, self.schema)
        except ServingError as exc:
            self._swap_failed(ref, exc)
            if self.serving is None:
                raise
            return
        previous, self.serving, self.swap_error = self.serving, loaded, None
        self._publish_version(previous, loaded)

    def _swap_failed(self, ref: str, exc: Exception) -> None:
        self.swap_error = {"version": ref, "error": str(exc), "time": time.time()}
        serving = self.serving.version if self.serving else None
        log.error("model swap to %s failed; still serving %s: %s", ref, serving, exc)
        metrics()["swap_failures"].inc(1, {"version": ref})

    def _publish_version(self, previous: Optional[ServedModel], loaded: ServedModel) -> None:
        gauge = metrics()["version"]
        if previous is not None:
            gauge.set(0, {"version": previous.version})
        gauge.set(1, {"version": loaded.version})
        log.info("serving %s (was %s)", loaded.version, previous.version if previous else None)

    def check_health(self) -> None:
        if self.serving is None:
            raise ServingError("no model version loaded")

    # -- predicting -----------------------------------------------------------------
    def make_job(self, body: dict) -> Job:
        """A validated ``/predict`` body (plain dicts) as a job: its records without the entity key."""
        key = self.config.data.entity_key
        instances = body["instances"]
        entities = [record.pop(key, None) for record in instances]
        return Job(instances, entities, self.ids.issue(len(instances)))

    async def run_jobs(self, jobs: list[Job]) -> list[Outcome]:
        """Featurize and predict ``jobs`` together on the compute thread, with one version."""
        serving = self.serving
        loop = asyncio.get_running_loop()
        outcomes, chunk = await loop.run_in_executor(self._compute_pool, self._compute, serving, jobs)
        record_outcomes(serving.task, serving.version, outcomes)
        if chunk is not None:
            self.log.append(chunk)
            metrics()["log_buffered"].set(self.log.buffered)
        return outcomes

    def _compute(self, serving: ServedModel, jobs: list[Job]) -> tuple[list[Outcome], Optional[batching.LogChunk]]:
        """Featurize once, predict with the serving version; the log rows of what it answered, with the shadow's outputs."""
        batch = batching.featurize(self.config, self.schema, jobs)
        outcomes = batching.predict(serving, batch)
        if not self.config.serve.prediction_log:
            return outcomes, None
        chunk = batching.log_chunk(batch, outcomes, serving.version)
        self.shadow.annotate(chunk)
        return self.shadow.answer_canaries(chunk, jobs, outcomes, self.config.serve.canary_fraction), chunk

    async def batched(self, job: Job) -> Outcome:
        """One job's outcome; the deployment replaces this with a ``@serve.batch`` of concurrent jobs."""
        return (await self.run_jobs([job]))[0]

    async def answer(self, job: Job) -> dict:
        """A job's response body: batched with concurrent small jobs, alone when larger than a batch."""
        small = len(job.instances) <= self.config.serve.max_batch_size
        outcome = await self.batched(job) if small else (await self.run_jobs([job]))[0]
        if outcome.error is not None:
            raise outcome.error
        return {"predictions": outcome.predictions, "probabilities": outcome.probabilities,
                "model_version": outcome.version, "request_id": job.request_id}

    async def respond(self, body: dict) -> JSONResponse:
        """The ``/predict`` route's answer to a validated body."""
        answer = await self.answer(self.make_job(body))
        return JSONResponse(answer, headers={"x-model-version": answer["model_version"]})

    async def predict_records(self, body: dict) -> dict:
        """``/predict`` without HTTP, for a Python client holding a ``DeploymentHandle``:
        ``handle.predict_records.remote({"instances": [...]})``. The same validation, batching,
        answer (a dict) and log; a bad body raises :class:`RecordError` naming the field."""
        try:
            valid = self._body_schema.validate_python(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise RecordError(field_path(tuple(first["loc"])), first["msg"]) from None
        return await self.answer(self.make_job(valid))

    # -- feedback, health, model ----------------------------------------------------
    async def accept_feedback(self, body: Any) -> JSONResponse:
        expected = self.ids.instances(body.request_id)
        if expected is None:
            raise http_error(404, "request_id: unknown request id (not issued by this service)")
        if len(body.labels) != expected:
            raise http_error(422, f"labels: expected {expected} labels (one per instance), got {len(body.labels)}")
        self._check_classes(body.labels)
        frame = pd.DataFrame({"request_id": body.request_id, "row": range(expected),
                              "label": pd.Series(body.labels, dtype=object if self.schema.task == "classification" else float),
                              "time": pd.Timestamp.now(tz="UTC")})
        await self._feedback.write(frame)
        version = self.serving.version if self.serving else ""
        return JSONResponse({"request_id": body.request_id, "accepted": expected, "model_version": version})

    def _check_classes(self, labels: list) -> None:
        """422 naming ``labels[i]`` when a classification label is not one of the model's classes."""
        serving = self.serving
        bad = serving.unknown_label(labels) if serving is not None else None
        if bad is not None:
            raise http_error(422, f"labels[{bad}]: {labels[bad]!r} is not one of the model's classes {serving.classes[:20]}")

    def health(self) -> dict:
        return {"status": "degraded" if self.swap_error or self.shadow.error else "ok",
                "model_version": self.serving.version if self.serving else "",
                "replica": self.replica, "last_swap_error": self.swap_error,
                "prediction_log": self.log.stats(), "shadow": self.shadow.health()}

    def model_info(self) -> dict:
        if self.serving is None:
            raise http_error(503, "model: no version loaded")
        classes = self.serving.classes if self.serving.task == "classification" else None
        return {**self.serving.metadata, "model_version": self.serving.version, "task": self.serving.task,
                "classes": classes}

    async def close(self) -> None:
        """Flush the prediction log (Serve calls ``__del__`` on graceful shutdown)."""
        flushed = await self.log.close()
        self._flusher.cancel()
        self._compute_pool.shutdown(wait=False)
        log.info("prediction log closed: %d rows flushed at shutdown, stats %s", flushed, self.log.stats())


# -- the deployment -----------------------------------------------------------------
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 503)}


def make_deployment(config: Config, token_sha256: Optional[str] = None) -> Any:
    """The Serve deployment class for ``config`` (routes typed by its request models)."""
    cfg = config.serve
    models = request_models(config)
    PredictRequest, FeedbackRequest = models.predict, models.feedback
    api = make_api(config, token_sha256)

    class Predictor(ModelServer):
        async def __init__(self, config: dict, secret: str):
            ModelServer.__init__(self, config, secret)

        @api.post("/predict", response_model=PredictResponse, responses=_ERRORS)
        async def predict(self, body: PredictRequest) -> JSONResponse:  # type: ignore[valid-type]
            return await self.respond(body)

        @serve.batch(max_batch_size=cfg.max_batch_size, batch_wait_timeout_s=cfg.batch_wait_timeout_s,
                     batch_size_fn=job_rows)
        async def batched(self, jobs: list) -> list:
            return await self.run_jobs(jobs)

        @api.post("/feedback", response_model=FeedbackResponse, responses=_ERRORS)
        async def feedback(self, body: FeedbackRequest) -> JSONResponse:  # type: ignore[valid-type]
            return await self.accept_feedback(body)

        @api.get("/health", response_model=HealthResponse)
        async def health_route(self) -> dict:
            return self.health()

        @api.get("/model")
        async def model_route(self) -> dict:
            return self.model_info()

        async def __del__(self):
            await self.close()

    ingress = serve.ingress(api)(Predictor)
    return serve.deployment(name=DEPLOYMENT_NAME, **deployment_options(config))(ingress)


def deployment_options(config: Config) -> dict[str, Any]:
    """Replica settings from ``config.serve`` (also written into Serve config files)."""
    cfg = config.serve
    return {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": cfg.num_cpus},
        "autoscaling_config": {
            "min_replicas": cfg.min_replicas,
            "initial_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
            "upscale_delay_s": cfg.upscale_delay_s,
            "downscale_delay_s": cfg.downscale_delay_s,
            "metrics_interval_s": cfg.metrics_interval_s,
            "look_back_period_s": cfg.look_back_period_s,
        },
        "graceful_shutdown_timeout_s": 20,
        "health_check_period_s": cfg.health_check_period_s,
        "health_check_timeout_s": cfg.health_check_timeout_s,
    }


def build_app(args: dict) -> Any:
    """Application builder for ``import_path: ray_mlops.serve.app:build_app``.

    ``args``: ``config`` (the project config as a mapping), ``secret`` (signs request
    ids), optional ``token_sha256`` (bearer token digest). ``user_config`` selects the
    version: ``{"version": "v3"}`` (or an alias, resolved by each replica).
    """
    config = config_from_dict(dict(args["config"]), origin="serve application args")
    deployment = make_deployment(config, args.get("token_sha256"))
    return deployment.bind(config.model_dump(mode="json"), str(args["secret"]))


__all__ = ["build_app", "make_deployment", "deployment_options", "ModelServer", "field_path", "DEPLOYMENT_NAME"]
