"""The one place where errors become HTTP responses: ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from service.errors import CircuitOpen, EraserError

log = logging.getLogger(__name__)


def error_body(code: str, message: str, **details: object) -> dict[str, object]:
    return {"error": {"code": code, "message": message, **details}}


async def eraser_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EraserError)
    headers = {}
    if isinstance(exc, CircuitOpen) and "retry_after_s" in exc.details:
        headers["Retry-After"] = str(max(1, round(float(exc.details["retry_after_s"]))))
    if exc.status_code >= 500:
        log.warning(
            "%s %s -> %d %s: %s",
            request.method,
            request.url.path,
            exc.status_code,
            exc.code,
            exc.message,
        )
    return JSONResponse(
        error_body(exc.code, exc.message, **exc.details),
        status_code=exc.status_code,
        headers=headers,
    )


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    return JSONResponse(
        error_body("invalid_request", f"{where}: {first['msg']}", problems=problems),
        status_code=422,
    )


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Registry, job queue or calibration store did not answer: the operator's request may be
    repeated later, so a 503, not a 500."""
    log.warning("%s %s -> 503: Redis: %s", request.method, request.url.path, exc)
    message = f"Redis (registry, job queue) did not answer: {type(exc).__name__}"
    return JSONResponse(error_body("redis_unavailable", message), status_code=503)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not a user error: logged with its trace, answered without one."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal_error", "internal error; see gateway logs"), 500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(EraserError, eraser_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(RedisError, redis_unavailable)
    app.add_exception_handler(Exception, unexpected_error)
