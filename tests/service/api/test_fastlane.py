"""The prediction routes' fast lane (``service.api.fastlane``): it takes exactly the requests the
router would give the prediction endpoints, with their path parameter, and keeps the router's
guarantees (credentials before bodies, mapped errors, the edge's last resort)."""

from __future__ import annotations

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Match

from service.api import routes_predict, routes_v1, routes_v2
from service.api.app import ROUTERS
from service.api.fastlane import route_of
from service.errors import ModelNotFound
from tests.service.api.conftest import MODEL, PREDICT

LANE = {routes_predict.predict, routes_v2.infer, routes_v1.predict}

PATHS = [
    "/predict",
    "/predict/",
    "/v2/models/compas/infer",
    "/v2/models/compas/versions/7/infer",
    "/v2/models/compas/versions//infer",
    "/v2/models/compas/other/7/infer",
    "/v2/models//infer",
    "/v2/models/infer",
    "/v2/models/a:b/infer",
    "/v2/models/compas/ready",
    "/v2/models/compas",
    "/v1/models/compas:predict",
    "/v1/models/a:predict:predict",
    "/v1/models/a/b:predict",
    "/v1/models/:predict",
    "/v1/models/compas",
    "/patches",
]


def routed(method: str, path: str) -> tuple[object, str | None] | None:
    """What FastAPI's own routes would run: (endpoint, its ``model`` parameter), or None."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    for router in ROUTERS:
        for route in router.routes:
            assert isinstance(route, APIRoute)
            match, child = route.matches(scope)
            if match == Match.FULL:
                return route.endpoint, child["path_params"].get("model")
    return None


@pytest.mark.parametrize("method", ["POST", "GET", "PUT"])
@pytest.mark.parametrize("path", PATHS)
def test_the_lane_takes_what_the_router_gives_the_prediction_endpoints(
    method: str, path: str
) -> None:
    expected = routed(method, path)
    if expected is not None and expected[0] not in LANE:
        expected = None  # another route's request: the lane leaves it to the router
    assert route_of(method, path) == expected


async def test_credentials_are_checked_before_the_body_on_every_lane_route(
    client: httpx.AsyncClient,
) -> None:
    not_json = b"\xff{ this body is never parsed"
    for path in ("/predict", f"/v2/models/{MODEL}/infer", f"/v1/models/{MODEL}:predict"):
        r = await client.post(path, content=not_json)
        assert r.status_code == 401, (path, r.text)
        r = await client.post(path, content=not_json, headers={"Authorization": "Bearer no"})
        assert r.status_code == 403, (path, r.text)
        r = await client.post(path, content=not_json, headers=PREDICT)
        assert r.status_code in (400, 422), (path, r.text)


async def test_errors_go_to_the_registered_handlers_and_bugs_to_the_edge(
    client: httpx.AsyncClient, app: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = app.state.gateway.dataplane  # type: ignore[attr-defined]
    body = {"inputs": [{"name": "x", "shape": [1, 7], "datatype": "FP32", "data": [0.0] * 7}]}

    async def not_found(*_: object, **__: object) -> None:
        raise ModelNotFound("gone", known_models=[])

    monkeypatch.setattr(plane, "predict", not_found)
    r = await client.post(f"/v2/models/{MODEL}/infer", json=body, headers=PREDICT)
    assert r.status_code == 404
    assert r.json() == {"error": "gone"}
    assert r.headers["X-Eraser-Error-Code"] == "model_not_found"
    assert r.headers["X-Request-ID"]

    async def bug(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(plane, "predict", bug)
    r = await client.post(f"/v2/models/{MODEL}/infer", json=body, headers=PREDICT)
    assert r.status_code == 500
    assert r.json() == {"error": "internal error; see gateway logs"}
    assert r.headers["X-Request-ID"]


async def test_the_router_still_answers_what_the_lane_answers(
    client: httpx.AsyncClient, app: object
) -> None:
    """Under a ``root_path`` the lane steps aside: the same handlers answer through FastAPI."""
    body = {"inputs": [{"name": "x", "shape": [2, 7], "datatype": "FP32", "data": [0.5] * 14}]}
    lane = await client.post(f"/v2/models/{MODEL}/infer", json=body, headers=PREDICT)
    transport = httpx.ASGITransport(app=app, root_path="/gw")  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as routed:
        via_router = await routed.post(f"/gw/v2/models/{MODEL}/infer", json=body, headers=PREDICT)
        refused = await routed.post(f"/gw/v2/models/{MODEL}/infer", json=body)
    assert lane.status_code == via_router.status_code == 200
    assert lane.json() == via_router.json()
    assert refused.status_code == 401
