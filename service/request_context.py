"""Request ids and W3C trace context, carried through one request in context variables.

The edge (``service.api.edge``) accepts a caller's ``X-Request-ID`` when it is safe to log and
forward (at most ``MAX_REQUEST_ID`` characters of ``[A-Za-z0-9._:-]``) and creates one
otherwise; it returns it on every response. A caller's W3C ``traceparent`` is kept only when it
is well formed (version ``00``-``fe``, non-zero trace and parent ids). The upstream client
forwards both (``upstream_headers``), and ``RequestIdFilter`` puts the id on every log record.

A context variable is copied into every task the request starts, so the id follows the
request into its upstream call; a micro-batched upstream call that carries several requests
carries the id of the request whose task started it.
"""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar
from typing import Final

REQUEST_ID_HEADER: Final = "X-Request-ID"
TRACEPARENT_HEADER: Final = "traceparent"
MAX_REQUEST_ID: Final = 128
NO_REQUEST: Final = "-"

_SAFE_ID = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID}}}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")

request_id: ContextVar[str | None] = ContextVar("eraser_request_id", default=None)
traceparent: ContextVar[str | None] = ContextVar("eraser_traceparent", default=None)


def accepted_request_id(value: str | None) -> str:
    """The caller's id if it is safe to log and forward, else a new one (32 hex characters)."""
    if value is not None and _SAFE_ID.fullmatch(value):
        return value
    return os.urandom(16).hex()  # what uuid4().hex draws, without building a UUID


def valid_traceparent(value: str | None) -> str | None:
    """A W3C ``traceparent`` (trace-context level 1) worth forwarding, or None.

    Version ``ff`` and all-zero trace or parent ids are invalid; a future version (not ``00``)
    may carry more fields after a dash, version ``00`` exactly four.
    """
    if value is None or len(value) > 512:
        return None
    value = value.strip()
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    if version == "00" and rest is not None:
        return None
    return value


def request_context(caller_id: str | None, caller_traceparent: str | None) -> RequestContext:
    """One request's id (the caller's if safe, else a new one) and the caller's trace context
    if valid, set for everything the request does (HTTP at the edge, gRPC per call):
    ``with request_context(rid, parent) as rid: ...``."""
    return RequestContext(accepted_request_id(caller_id), valid_traceparent(caller_traceparent))


class RequestContext:
    """The context manager ``request_context`` returns; yields the request id.

    A plain class rather than ``@contextmanager``: it runs on every request, and a generator
    context manager costs a generator, a wrapper object and two resumptions."""

    __slots__ = ("_rid", "_tokens", "_traceparent")

    def __init__(self, rid: str, parent: str | None) -> None:
        self._rid = rid
        self._traceparent = parent

    def __enter__(self) -> str:
        self._tokens = request_id.set(self._rid), traceparent.set(self._traceparent)
        return self._rid

    def __exit__(self, *_exc: object) -> None:
        request_id.reset(self._tokens[0])
        traceparent.reset(self._tokens[1])


def upstream_headers() -> dict[str, str]:
    """The current request's id and trace context, for the upstream call (empty outside one)."""
    headers = {}
    rid = request_id.get()
    if rid is not None:
        headers[REQUEST_ID_HEADER] = rid
    parent = traceparent.get()
    if parent is not None:
        headers[TRACEPARENT_HEADER] = parent
    return headers


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` (``-`` outside a request) so formats can print it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or NO_REQUEST
        return True
