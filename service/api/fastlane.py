"""The prediction routes' fast lane: ``POST /predict``, ``/v2/models/{m}[/versions/{v}]/infer``
and ``/v1/models/{m}:predict`` reach their handlers without FastAPI's router.

Profiled under load (py-spy, docs/operations.md#performance), FastAPI's per-request machinery
around these handlers — matching the path against every route of the app, solving the
dependencies (auth, the data plane) and parsing query parameters nobody reads, and the
exception and exit-stack wrappers — cost more CPU than the handlers' own work. The handlers take
the raw ``Request`` and read their bodies themselves (``service.api.bodies``), so nothing FastAPI
does for them is lost by calling them directly:

- the same handler functions run (the routes stay registered, for the OpenAPI document and for
  every request this lane does not take: another method, a trailing slash, a ``root_path``);
- authentication runs first, before a byte of the body is read, as the routers' dependency does;
- it sits inside the edge (``service.api.edge``), so request ids and body limits apply unchanged;
- an exception goes to the handler the app registered for its type (``service.api.errors``), as
  Starlette's exception middleware would send it; one without a handler reaches the edge's
  last-resort 500, as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import routes_predict, routes_v1, routes_v2
from service.api.auth import require_predict
from service.api.deps import dataplane_of

Endpoint = Callable[..., Awaitable[Response]]
ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

_V2 = "/v2/models/"
_V2_TAIL = "/infer"
_V1 = "/v1/models/"
_V1_TAIL = ":predict"


def route_of(method: str, path: str) -> tuple[Endpoint, str | None] | None:
    """The endpoint the router would pick for this request and its ``model`` path parameter
    (None for ``/predict``), or None: the router decides.

    Path parameters match as Starlette's ``{model}`` does: one or more characters, no ``/``.
    """
    if method != "POST":
        return None
    if path == "/predict":
        return routes_predict.predict, None
    if path.startswith(_V2) and path.endswith(_V2_TAIL):
        parts = path[len(_V2) : -len(_V2_TAIL)].split("/")
        versioned = len(parts) == 3 and parts[1] == "versions" and parts[2]
        if parts[0] and (len(parts) == 1 or versioned):
            return routes_v2.infer, parts[0]
        return None
    if path.startswith(_V1) and path.endswith(_V1_TAIL):
        model = path[len(_V1) : -len(_V1_TAIL)]
        return (routes_v1.predict, model) if model and "/" not in model else None
    return None


class FastLane:
    """Pure ASGI; every request it does not take goes to ``app`` (the router) untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http" and not scope.get("root_path"):
            route = route_of(scope["method"], scope["path"])
        if route is None:
            await self.app(scope, receive, send)
            return
        endpoint, model = route
        request = Request(scope, receive, send)
        try:
            await require_predict(request)
            plane = dataplane_of(scope["app"])
            if model is None:
                response = await endpoint(request, plane)
            else:
                response = await endpoint(model, request, plane)
        except Exception as exc:
            on_error = _exception_handler(scope["app"], exc)
            if on_error is None:
                raise  # the edge's last resort, as for any route
            if inspect.iscoroutinefunction(on_error):
                response = await on_error(request, exc)
            else:
                response = await run_in_threadpool(on_error, request, exc)
        await response(scope, receive, send)


def _exception_handler(app: Any, exc: Exception) -> ExceptionHandler | None:
    """The handler registered for the nearest class of ``exc`` (Starlette's own lookup)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None
