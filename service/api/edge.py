"""The request edge, outermost in the app: request ids, body limits while reading, and a
last-resort 500.

Request ids: every response carries ``X-Request-ID``, the caller's when it is safe, else a new
one; it and a valid W3C ``traceparent`` are set in ``service.request_context`` for the logs and
the upstream call.

Body limits: a body whose ``Content-Length`` exceeds its route's limit is answered 413 at once,
before a byte of it is read, and the connection is closed; a body without a length (chunked)
is counted as it streams in and refused the moment it passes the limit. Either way memory
stays flat, whatever a client sends. Limits per route are in ``body_limit``.

Last resort: a bug that escapes every exception handler is logged once (with its traceback,
throttled) and answered with the documented error body. Starlette's own handler for that case
re-raises, which logs a second traceback and resets the client's keep-alive connection.
"""

from __future__ import annotations

import logging

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_content
from service.api.throttled_log import ThrottledLog
from service.errors import PayloadTooLarge
from service.request_context import REQUEST_ID_HEADER, TRACEPARENT_HEADER, request_context
from service.settings import GatewaySettings

log = logging.getLogger(__name__)
bugs = ThrottledLog(log)

MB = 2**20
REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.lower().encode()
TRACEPARENT_HEADER_BYTES = TRACEPARENT_HEADER.lower().encode()


def body_limit(settings: GatewaySettings, method: str, path: str) -> int:
    """Bytes a request body may have: uploads get their file limit plus room for the form's
    other parts, the prediction routes (native, OIP v2, KServe v1) ``limits.predict_body_mb``,
    everything else (small JSON documents, or no body at all) ``limits.json_body_mb``."""
    limits = settings.limits
    if method == "POST":
        if path == "/predict" or _is_protocol_inference(path):
            return int(limits.predict_body_mb * MB)
        if path in ("/patches", "/audits"):  # a data file and an optional pairs file
            return int((2 * settings.training.max_calibration_mb + limits.upload_overhead_mb) * MB)
        if path.startswith("/patches/") and path.endswith("/versions"):
            return int((settings.max_artifact_mb + limits.upload_overhead_mb) * MB)
    return int(limits.json_body_mb * MB)


def _is_protocol_inference(path: str) -> bool:
    """OIP v2 ``/v2/models/{m}[/versions/{v}]/infer`` or KServe v1 ``/v1/models/{m}:predict``."""
    if path.startswith("/v2/models/"):
        return path.endswith("/infer")
    return path.startswith("/v1/models/") and path.endswith(":predict")


class RequestEdge:
    """Pure ASGI (no per-request task or buffering, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with request_context(*_caller_context(scope)) as rid:
            await self._handle(scope, receive, send, (REQUEST_ID_HEADER_BYTES, rid.encode()))

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, id_header: tuple[bytes, bytes]
    ) -> None:
        path = scope["path"]
        limit = body_limit(self.settings, scope["method"], path)
        length = _content_length(scope)
        if length is not None and length > limit:
            message = _too_large(limit, length)
            error = error_content(path, 413, "payload_too_large", message, {"limit_bytes": limit})
            await _send_json(send, *error, close=True, id_header=id_header)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            await self.app(scope, _capped(receive, limit), tracked)
        except Exception as exc:
            bugs.error(  # a different bug on the same route still gets its own traceback
                (scope["method"], scope["path"], type(exc)),
                "unhandled error on %s %s",
                scope["method"],
                scope["path"],
                exc_info=True,
            )
            if not started:
                message = "internal error; see gateway logs"
                error = error_content(path, 500, "internal_error", message)
                await _send_json(send, *error, id_header=id_header)


def _caller_context(scope: Scope) -> tuple[str | None, str | None]:
    """The caller's ``X-Request-ID`` and ``traceparent`` headers, as sent (checked by
    ``request_context``)."""
    rid = parent = None
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER_BYTES:
            rid = value.decode("latin-1")
        elif name == TRACEPARENT_HEADER_BYTES:
            parent = value.decode("latin-1")
    return rid, parent


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed length before we see it
    return None


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises PayloadTooLarge (a 413 from the error handlers) once the body
    read so far exceeds ``limit``; the rest is never read."""
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(_too_large(limit), limit_bytes=limit)
        return message

    return capped


def _too_large(limit: int, length: int | None = None) -> str:
    size = f"a body of {length} bytes" if length is not None else "the body"
    return f"{size} exceeds this route's limit of {limit} bytes"


async def _send_json(
    send: Send,
    status: int,
    body: dict[str, object],
    extra: dict[str, str],
    close: bool = False,
    id_header: tuple[bytes, bytes] | None = None,
) -> None:
    payload = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    if id_header is not None:
        headers.append(id_header)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
