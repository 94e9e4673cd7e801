"""The HTTP layer of the inference app: the ASGI guard and the errors that name the field.

- :class:`Guard` (pure ASGI middleware) refuses oversized bodies and missing tokens before
  FastAPI decodes anything, and records per-route request metrics;
- the exception handlers turn every error into a 4xx naming the field, or a 503 with
  ``Retry-After`` when a dependency is down; an unexpected error is a logged 500;
- :func:`make_api` builds the FastAPI app with both.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_mlops.config import Config
from ray_mlops.data.online import RecordError
from ray_mlops.errors import RETRY_AFTER_S, ClusterError, HttpStatus, RayMlopsError, StorageError, http_status
from ray_mlops.serve.ids import token_matches
from ray_mlops.serve.metrics import record_request

log = logging.getLogger("ray.serve")

ROUTES = ("/predict", "/feedback", "/health", "/model", "/openapi.json", "/docs")
PROTECTED = ("/predict", "/feedback")


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
            record_request(route, status[0], (time.perf_counter() - started) * 1000)

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


def http_error(status: int, detail: str) -> StarletteHTTPException:
    """An HTTP error whose detail starts with the field it names (``labels: ...``)."""
    return StarletteHTTPException(status_code=status, detail=detail)


# -- the FastAPI app ----------------------------------------------------------------
def make_api(config: Config, token_sha256: Optional[str]) -> FastAPI:
    """The FastAPI app of ``config``'s deployment: error handlers and the guard (routes come from the replica class)."""
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




__all__ = ["Guard", "field_path", "http_error", "make_api", "ROUTES", "PROTECTED"]
