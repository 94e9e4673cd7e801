"""The Serve application: a FastAPI-ingress deployment serving one registry version.

Routes (see docs/ARCHITECTURE.md, the HTTP contract): ``POST /predict``, ``POST /feedback``, ``GET /health``,
``GET /model``; OpenAPI at ``/openapi.json``. The request schema is built from the
config's sources (:mod:`ray_mlops.serve.schemas`), so each project gets its own.

Inside a replica:

- concurrent small requests are featurized and predicted together (``@serve.batch``,
  counting rows), on one worker thread so the event loop keeps accepting requests;
- ``reconfigure({"version": "v7"})`` loads, verifies and warms up that version off the
  event loop, then swaps one reference: a batch uses the version it started with, and
  every response names it. A version that fails leaves the old one serving; the error
  shows in ``/health`` and the replica log;
- ``reconfigure({"version": "v7", "shadow": "v8"})`` also loads ``v8`` as a shadow: it
  predicts on every logged batch beside production, only logged
  (:mod:`ray_mlops.serve.shadow`);
- every prediction goes to the bounded prediction log (:mod:`ray_mlops.serve.predlog`).

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
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_mlops.config import Config, config_from_dict
from ray_mlops.data.online import RecordError, featurize_instances
from ray_mlops.data.schema import feature_schema
from ray_mlops.errors import RETRY_AFTER_S, ClusterError, HttpStatus, RayMlopsError, ServingError, StorageError, http_status
from ray_mlops.registry import Registry
from ray_mlops.serve import predlog
from ray_mlops.serve.ids import RequestIds, token_matches
from ray_mlops.serve.model import ServedModel, load_version
from ray_mlops.serve.shadow import ShadowSlot
from ray_mlops.serve.schemas import (
    ErrorResponse,
    FeedbackResponse,
    HealthResponse,
    PredictResponse,
    request_models,
)
from ray_mlops.storage import Storage

log = logging.getLogger("ray.serve")

DEPLOYMENT_NAME = "Predictor"
ROUTES = ("/predict", "/feedback", "/health", "/model", "/openapi.json", "/docs")
PROTECTED = ("/predict", "/feedback")
LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


# -- metrics (created lazily, inside the replica process) -----------------------------
@functools.lru_cache(maxsize=1)
def metrics() -> dict[str, Any]:
    """The replica's ``ray.util.metrics`` instruments, all named ``ray_mlops_*``."""
    from ray.util.metrics import Counter, Histogram

    from ray_mlops.telemetry import HeldGauge as Gauge  # stays on the endpoint between updates

    return {
        "requests": Counter("ray_mlops_requests", "HTTP requests by route and status", tag_keys=("route", "status")),
        "errors": Counter("ray_mlops_request_errors", "HTTP 4xx/5xx responses by route and status",
                          tag_keys=("route", "status")),
        "latency": Histogram("ray_mlops_request_latency_ms", "HTTP request latency (ms)",
                             boundaries=LATENCY_BUCKETS_MS, tag_keys=("route",)),
        "batch": Histogram("ray_mlops_batch_rows", "rows per model call", boundaries=BATCH_BUCKETS),
        "predictions": Counter("ray_mlops_predictions", "predictions by version and predicted class",
                               tag_keys=("version", "prediction")),
        "prediction_value": Histogram("ray_mlops_prediction_value", "regression outputs (<= 0.01 in the first bucket)",
                                      boundaries=[0.01, 0.1, 1, 10, 100, 1000, 10000], tag_keys=("version",)),
        "score": Histogram("ray_mlops_prediction_score", "probability of the predicted class",
                           boundaries=[0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99], tag_keys=("version",)),
        "version": Gauge("ray_mlops_serving_version", "1 for the version this replica serves", tag_keys=("version",)),
        "swap_failures": Counter("ray_mlops_swap_failures", "versions that failed to load", tag_keys=("version",)),
        "shadow_failures": Counter("ray_mlops_shadow_failures", "batches a shadow version was dropped from",
                                   tag_keys=("version",)),
        "log": Counter("ray_mlops_prediction_log_records", "prediction log records by outcome", tag_keys=("outcome",)),
        "log_buffered": Gauge("ray_mlops_prediction_log_buffered", "prediction log records waiting to flush"),
    }


def _route_of(scope: dict) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path if path in ROUTES else "other"


def _error_body(status: int, detail: str, field: Optional[str] = None) -> tuple[int, bytes]:
    return status, JSONResponse({"detail": detail, "field": field}).body


# -- the ASGI guard: size limit, token, request metrics -------------------------------
class Guard:
    """Pure ASGI middleware: body size limit, bearer token, per-route metrics.

    The whole body is read here (at most ``max_body_bytes``) before FastAPI parses it,
    so an oversized request is refused without being decoded.
    """

    def __init__(self, app: Any, max_body_bytes: int, token_sha256: Optional[str]):
        self.app, self.max_body_bytes, self.token_sha256 = app, max_body_bytes, token_sha256

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, started, status = _route_of(scope), time.perf_counter(), [500]

        async def send_and_record(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, route)
            if refusal is None:
                body, refusal = await self._read_body(receive)
            if refusal is not None:
                return await self._respond(send_and_record, *refusal)
            await self.app(scope, _replay(body, receive), send_and_record)
        finally:
            _record_request(route, status[0], (time.perf_counter() - started) * 1000)

    def _refusal(self, scope: dict, route: str) -> Optional[tuple]:
        headers = dict(scope.get("headers") or [])
        if route in PROTECTED and not token_matches(headers.get(b"authorization", b"").decode("latin-1"), self.token_sha256):
            return 401, "authorization: missing or wrong bearer token", "authorization"
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return 413, f"body: larger than {self.max_body_bytes} bytes", "body"
        return None

    async def _read_body(self, receive: Any) -> tuple[bytes, Optional[tuple]]:
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", (400, "body: client disconnected", "body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"", (413, f"body: larger than {self.max_body_bytes} bytes", "body")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks), None

    @staticmethod
    async def _respond(send: Any, status: int, detail: str, field: Optional[str]) -> None:
        _, body = _error_body(status, detail, field)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _record_request(route: str, status: int, latency_ms: float) -> None:
    m = metrics()
    tags = {"route": route, "status": str(status)}
    m["requests"].inc(1, tags)
    if status >= 400:
        m["errors"].inc(1, tags)
    m["latency"].observe(latency_ms, {"route": route})


# -- errors -> 4xx naming the field --------------------------------------------------
_TYPE_TAGS = {"float", "int", "str", "bool", "list", "dict", "none", "literal", "json-or-python"}


def field_path(loc: tuple) -> str:
    """Pydantic's ``("body", "instances", 0, "age_years")`` as ``instances[0].age_years``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "body" and not path:
            continue
        elif part in _TYPE_TAGS or "[" in part or "-" in part:
            continue  # a union branch or validator tag, not a field
        else:
            path += f".{part}" if path else part
    return path or "body"


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        position = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return JSONResponse({"detail": f"body: not valid JSON{position}", "field": "body"}, status_code=400)
    where, status = field_path(loc), 422
    message = first.get("msg", "invalid")
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return JSONResponse({"detail": f"{where}: {message}{more}", "field": where}, status_code=status)


async def _record_error(request: Request, exc: RecordError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    field = detail.split(":", 1)[0] if ":" in detail else None
    return JSONResponse({"detail": detail, "field": field}, status_code=exc.status_code, headers=exc.headers)


_AREAS = ((StorageError, "storage"), (ClusterError, "ray"))


async def _package_error(request: Request, exc: Exception) -> JSONResponse:
    """A package (or Ray) error: 4xx naming the field, else 503 with ``Retry-After``; never a 500."""
    answer = http_status(exc) if isinstance(exc, RayMlopsError) else HttpStatus(503, RETRY_AFTER_S)
    if answer.retry_after is None:
        field = getattr(exc, "field", None)
        return JSONResponse({"detail": str(exc), "field": field}, status_code=answer.status)
    area = next((name for kind, name in _AREAS if isinstance(exc, kind)), "ray" if isinstance(exc, RayError) else "service")
    log.error("%s %s: %s unavailable: %s: %s", request.method, request.url.path, area, type(exc).__name__, exc)
    detail = f"{area}: temporarily unavailable ({type(exc).__name__}); retry after {answer.retry_after} s"
    return JSONResponse({"detail": detail, "field": area}, status_code=answer.status,
                        headers={"retry-after": str(answer.retry_after)})


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}", "field": None}, status_code=500)


def _http(status: int, detail: str) -> StarletteHTTPException:
    return StarletteHTTPException(status_code=status, detail=detail)


# -- the replica's logic ------------------------------------------------------------
@dataclass
class Job:
    """One /predict request waiting for the model."""

    instances: list[dict]
    entities: list
    request_id: str


@dataclass
class Outcome:
    predictions: list = field(default_factory=list)
    probabilities: Optional[list] = None
    version: str = ""
    error: Optional[Exception] = None


def job_rows(jobs: list) -> int:
    """Batch size in rows (``@serve.batch``'s ``batch_size_fn``)."""
    return sum(len(job.instances) for job in jobs)


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
        self.replica = _replica_name()
        self.writer_id = f"{self.replica}-{uuid.uuid4().hex[:8]}"
        self.serving: Optional[ServedModel] = None
        self.swap_error: Optional[dict] = None
        self.shadow = ShadowSlot(functools.partial(load_version, self.registry, schema=self.schema),
                                 lambda version: metrics()["shadow_failures"].inc(1, {"version": version}))
        self._compute_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self._feedback = predlog.PartitionedWriter(self.storage, predlog.FEEDBACK_DIR, self.writer_id)
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
    def make_job(self, body: Any) -> Job:
        key = self.config.data.entity_key
        instances = [instance.model_dump() for instance in body.instances]
        entities = [record.pop(key, None) for record in instances]
        return Job(instances, entities, self.ids.issue(len(instances)))

    async def run_jobs(self, jobs: list[Job]) -> list[Outcome]:
        """Featurize and predict ``jobs`` together on the compute thread, with one version."""
        serving = self.serving
        loop = asyncio.get_running_loop()
        outcomes, frame, rows = await loop.run_in_executor(self._compute_pool, self._compute, serving, jobs)
        self._after_batch(serving, outcomes, frame, rows)
        return outcomes

    def _featurize(self, jobs: list[Job]) -> list:
        """Feature frames per job (or the RecordError of that job's own instances)."""
        try:
            together = featurize_instances(self.config, [r for job in jobs for r in job.instances], self.schema)
        except Exception:
            return [self._featurize_one(job) for job in jobs]
        frames, start = [], 0
        for job in jobs:
            frames.append(together.iloc[start:start + len(job.instances)])
            start += len(job.instances)
        return frames

    def _featurize_one(self, job: Job) -> Any:
        try:
            return featurize_instances(self.config, job.instances, self.schema)
        except RecordError as exc:
            return exc
        except Exception as exc:  # a value the featurizers cannot handle: the client's input
            return RecordError("instances", f"cannot featurize: {type(exc).__name__}: {exc}")

    @staticmethod
    def _predict(serving: ServedModel, good: list) -> list:
        """Predictions per job; a failing batch is retried job by job to isolate the cause."""
        features = pd.concat([f for _, f in good], ignore_index=True) if len(good) > 1 else good[0][1]
        try:
            out, start, parts = serving.predict(features.reset_index(drop=True)), 0, []
        except Exception as exc:
            if len(good) == 1:
                return [RecordError("instances", f"the model cannot score these instances: {type(exc).__name__}")]
            return [part for item in good for part in ModelServer._predict(serving, [item])]
        for _, f in good:
            end = start + len(f)
            probs = out.probabilities[start:end] if out.probabilities is not None else None
            parts.append(Outcome(out.predictions[start:end], probs, serving.version))
            start = end
        return parts

    def _compute(self, serving: ServedModel, jobs: list[Job]) -> tuple[list[Outcome], Optional[pd.DataFrame], int]:
        frames = self._featurize(jobs)
        good = [(job, f) for job, f in zip(jobs, frames) if not isinstance(f, Exception)]
        results = self._predict(serving, good) if good else []
        by_job = {id(job): result for (job, _), result in zip(good, results)}
        outcomes = []
        for job, f in zip(jobs, frames):
            result = by_job.get(id(job), f)
            outcomes.append(Outcome(error=result) if isinstance(result, Exception) else result)
        scored = [(job, f) for (job, f), result in zip(good, results) if isinstance(result, Outcome)]
        if not scored or not self.config.serve.prediction_log:
            return outcomes, None, sum(len(f) for _, f in scored)
        frame = self._log_frame(scored, [by_job[id(job)] for job, _ in scored], serving.version)
        self.shadow.annotate(frame, list(self.schema.features))
        return outcomes, frame, len(frame)

    @staticmethod
    def _log_frame(scored: list, results: list[Outcome], version: str) -> pd.DataFrame:
        frame = pd.concat([f for _, f in scored], ignore_index=True)
        jobs = [job for job, _ in scored]
        frame["request_id"] = [job.request_id for job in jobs for _ in job.instances]
        frame["row"] = [i for job in jobs for i in range(len(job.instances))]
        frame["entity"] = [None if e is None else str(e) for job in jobs for e in job.entities]
        frame["model_version"] = version
        frame["prediction"] = [p for r in results for p in r.predictions]
        frame["probabilities"] = [p for r in results for p in r.probabilities] if results[0].probabilities is not None else None
        frame["time"] = pd.Timestamp.now(tz="UTC")
        return frame

    def _after_batch(self, serving: ServedModel, outcomes: list[Outcome], frame: Optional[pd.DataFrame], rows: int) -> None:
        m = metrics()
        if rows:
            m["batch"].observe(rows)
        counts: dict[str, int] = {}
        for outcome in outcomes:
            if serving.task == "classification":
                for label, probs in zip(outcome.predictions, outcome.probabilities or []):
                    counts[str(label)] = counts.get(str(label), 0) + 1
                    m["score"].observe(max(probs), {"version": serving.version})
            else:
                for value in outcome.predictions:
                    m["prediction_value"].observe(float(value), {"version": serving.version})
        for label, n in counts.items():
            m["predictions"].inc(n, {"version": serving.version, "prediction": label})
        if frame is not None:
            self.log.append(frame)
            m["log_buffered"].set(self.log.buffered)

    def respond(self, job: Job, outcome: Outcome) -> JSONResponse:
        if outcome.error is not None:
            raise outcome.error
        body = {"predictions": outcome.predictions, "probabilities": outcome.probabilities,
                "model_version": outcome.version, "request_id": job.request_id}
        return JSONResponse(body, headers={"x-model-version": outcome.version})

    # -- feedback, health, model ----------------------------------------------------
    async def accept_feedback(self, body: Any) -> JSONResponse:
        expected = self.ids.instances(body.request_id)
        if expected is None:
            raise _http(404, "request_id: unknown request id (not issued by this service)")
        if len(body.labels) != expected:
            raise _http(422, f"labels: expected {expected} labels (one per instance), got {len(body.labels)}")
        self._check_classes(body.labels)
        frame = pd.DataFrame({"request_id": body.request_id, "row": range(expected),
                              "label": pd.Series(body.labels, dtype=object if self.schema.task == "classification" else float),
                              "time": pd.Timestamp.now(tz="UTC")})
        await asyncio.to_thread(self._feedback.write, frame)
        version = self.serving.version if self.serving else ""
        return JSONResponse({"request_id": body.request_id, "accepted": expected, "model_version": version})

    def _check_classes(self, labels: list) -> None:
        """422 naming ``labels[i]`` when a classification label is not one of the model's classes."""
        serving = self.serving
        bad = serving.unknown_label(labels) if serving is not None else None
        if bad is not None:
            raise _http(422, f"labels[{bad}]: {labels[bad]!r} is not one of the model's classes {serving.classes[:20]}")

    def health(self) -> dict:
        return {"status": "degraded" if self.swap_error or self.shadow.error else "ok",
                "model_version": self.serving.version if self.serving else "",
                "replica": self.replica, "last_swap_error": self.swap_error,
                "prediction_log": self.log.stats(), "shadow": self.shadow.health()}

    def model_info(self) -> dict:
        if self.serving is None:
            raise _http(503, "model: no version loaded")
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
def _api(config: Config, token_sha256: Optional[str]) -> FastAPI:
    api = FastAPI(title=f"{config.project} inference", version="1",
                  description=f"Predictions of {config.model_name} (the registry's serving version).")
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(RecordError, _record_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    api.add_exception_handler(RayMlopsError, _package_error)
    api.add_exception_handler(RayError, _package_error)
    api.add_exception_handler(Exception, _unexpected)
    api.add_middleware(Guard, max_body_bytes=config.serve.max_body_bytes, token_sha256=token_sha256)
    return api


_ERRORS = {status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 422, 503)}


def make_deployment(config: Config, token_sha256: Optional[str] = None) -> Any:
    """The Serve deployment class for ``config`` (routes typed by its request models)."""
    cfg = config.serve
    models = request_models(config)
    PredictRequest, FeedbackRequest = models.predict, models.feedback
    api = _api(config, token_sha256)

    class Predictor(ModelServer):
        async def __init__(self, config: dict, secret: str):
            ModelServer.__init__(self, config, secret)

        @api.post("/predict", response_model=PredictResponse, responses=_ERRORS)
        async def predict(self, body: PredictRequest) -> JSONResponse:  # type: ignore[valid-type]
            job = self.make_job(body)
            if len(job.instances) <= cfg.max_batch_size:
                outcome = await self.batched(job)
            else:
                outcome = (await self.run_jobs([job]))[0]
            return self.respond(job, outcome)

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
