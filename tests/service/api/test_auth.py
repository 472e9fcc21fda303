"""Prediction and operator credentials are separate and enforced on every route."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.service.api.conftest import ADMIN, PREDICT

OPEN = {"/v2/health/live", "/v2/health/ready", "/metrics"}
# /feedback: the admin key or its own
OPERATOR_PREFIXES = ("/patches", "/models/", "/jobs", "/audits", "/feedback")


def guarded_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every documented route (from the OpenAPI schema) except the open probes."""
    routes = []
    for path, operations in app.openapi()["paths"].items():
        if path not in OPEN:
            concrete = path.format(model="compas", name="p", version=1, job_id="j", audit_id="a")
            routes += [(method.upper(), concrete) for method in operations]
    return routes


async def test_every_route_needs_its_own_credential(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    routes = guarded_routes(app)
    assert len(routes) >= 15  # predict, v2 (4), v1 (2), operators (8+)
    for method, path in routes:
        operator = path.startswith(OPERATOR_PREFIXES)
        right, wrong = (ADMIN, PREDICT) if operator else (PREDICT, ADMIN)
        missing = await client.request(method, path)
        assert missing.status_code == 401, (method, path, missing.text)
        error = missing.json()["error"]
        if path.startswith(("/v2", "/v1/")):  # the protocols' {"error": "<message>"}
            assert missing.headers["X-Eraser-Error-Code"] == "unauthorized"
            assert isinstance(error, str)
        else:
            assert error["code"] == "unauthorized"
        forbidden = await client.request(method, path, headers=wrong)
        assert forbidden.status_code == 403, (method, path, forbidden.text)
        garbage = await client.request(method, path, headers={"X-API-Key": "guess"})
        assert garbage.status_code == 403
        allowed = await client.request(method, path, headers=right)
        assert allowed.status_code not in (401, 403), (method, path, allowed.text)


@pytest.mark.parametrize("path", [*sorted(OPEN - {"/metrics"}), "/metrics"])
async def test_probes_and_metrics_are_open(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 200
