"""The one place where errors become HTTP responses: ``{"error": {"code", "message", ...}}``.

Route-aware: the inference protocols' routes (``/v2/...``, KServe v1's ``/v1/models/...``) answer
the protocols' own body, ``{"error": "<message>"}``, which OIP client libraries parse; a request
the protocol calls malformed is a 400 there (where the native routes say 422), and the stable
code travels in the ``X-Eraser-Error-Code`` header. Every other route keeps the richer body.

Domain errors (``service.errors``), request validation, the framework's own errors (unknown
route, wrong method, a malformed form) and Redis outages are mapped here. A bug that escapes
all of these is answered by the edge (``service.api.edge``), in the same body.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError, ResponseError
from starlette.exceptions import HTTPException

from service.api.throttled_log import ThrottledLog
from service.errors import CircuitOpen, EraserError, PayloadTooLarge

log = logging.getLogger(__name__)
server_errors = ThrottledLog(log)  # an open breaker can fail thousands of requests a second

FRAMEWORK_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


PROTOCOL_PREFIXES = ("/v2/", "/v1/models/")
ERROR_CODE_HEADER = "X-Eraser-Error-Code"


def error_body(code: str, message: str, **details: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **details}}


def speaks_protocol(path: str) -> bool:
    """An Open Inference Protocol v2 or KServe v1 route (their clients expect their errors)."""
    return path == "/v2" or path.startswith(PROTOCOL_PREFIXES)


def error_content(
    path: str, status: int, code: str, message: str, details: Mapping[str, object] | None = None
) -> tuple[int, dict[str, object], dict[str, str]]:
    """(status, body, extra headers) of an error on ``path``: the protocols' ``{"error": msg}``
    on their routes, ``{"error": {"code", "message", ...details}}`` everywhere else."""
    if not speaks_protocol(path):
        return status, error_body(code, message, **(details or {})), {}
    return (400 if status == 422 else status), {"error": message}, {ERROR_CODE_HEADER: code}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    details: Mapping[str, object] | None = None,
) -> JSONResponse:
    status, body, extra = error_content(request.url.path, status, code, message, details)
    return JSONResponse(body, status_code=status, headers={**(headers or {}), **extra})


async def eraser_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EraserError)
    headers = {}
    if isinstance(exc, CircuitOpen) and "retry_after_s" in exc.details:
        headers["Retry-After"] = str(max(1, round(float(exc.details["retry_after_s"]))))
    if isinstance(exc, PayloadTooLarge):
        headers["Connection"] = "close"  # do not read the rest of an oversized body
    if exc.status_code >= 500:
        server_errors.warning(
            (request.method, request.url.path, exc.status_code, exc.code),
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            exc.status_code,
            exc.code,
            exc.message,
        )
    return error_response(request, exc.status_code, exc.code, exc.message, headers, exc.details)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    message = f"{where}: {first['msg']}"
    return error_response(request, 422, "invalid_request", message, None, {"problems": problems})


async def framework_error(request: Request, exc: Exception) -> JSONResponse:
    """Errors Starlette raises itself (404 for an unknown route, 405, a malformed form)."""
    assert isinstance(exc, HTTPException)
    code = FRAMEWORK_CODES.get(exc.status_code, "http_error")
    return error_response(request, exc.status_code, code, str(exc.detail), exc.headers)


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Registry, job queue or calibration store did not answer, or refused a command (e.g. a
    replica that is read-only during a failover): the operator's request may be repeated later,
    so a 503, not a 500. The message says which, so a refusal is not taken for an outage."""
    server_errors.warning(
        (request.method, request.url.path, 503, type(exc).__name__),
        "%s %s -> 503: Redis: %s",
        request.method,
        request.url.path,
        exc,
    )
    what = "refused a command" if isinstance(exc, ResponseError) else "did not answer"
    message = f"Redis (registry, job queue) {what}: {type(exc).__name__}"
    return error_response(request, 503, "redis_unavailable", message)


def install(app: FastAPI) -> None:
    app.add_exception_handler(EraserError, eraser_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, framework_error)
    app.add_exception_handler(RedisError, redis_unavailable)
