"""KServe v1 drop-in with a plain HTTP client, and request ids / trace context end to end."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest
from prometheus_client import generate_latest

from service.api.app import create_app
from service.metrics import GatewayMetrics
from service.request_context import RequestIdFilter, accepted_request_id, valid_traceparent
from tests.service.api.conftest import (
    MODEL,
    PREDICT,
    RecordingUpstream,
    asgi_client,
    make_settings,
)

ROWS = [[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0]]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


async def test_v1_predict_answers_predictions_like_v2(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    r = await client.post(f"/v1/models/{MODEL}:predict", headers=PREDICT, json={"instances": ROWS})
    assert r.status_code == 200, r.text
    assert list(r.json()) == ["predictions"] and r.headers["X-Eraser-Revision"] == "0"
    v2 = await client.post(
        f"/v2/models/{MODEL}/infer",
        headers=PREDICT,
        json={"inputs": [{"name": "x", "shape": [2, 7], "datatype": "FP32", "data": ROWS}]},
    )
    expected = np.asarray(v2.json()["outputs"][0]["data"]).reshape(2, 2)
    np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-6)
    exposition = generate_latest(metrics.registry).decode()
    assert f'model="{MODEL}",outcome="raw",route="v1"' in exposition


async def test_v1_model_status_keys_and_errors(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/v1/models/{MODEL}", headers=PREDICT)).json() == {
        "name": MODEL,
        "ready": True,
    }
    assert (await client.get(f"/v1/models/{MODEL}")).status_code == 401
    r = await client.post(f"/v1/models/{MODEL}:predict", json={"instances": ROWS})
    assert r.status_code == 401 and isinstance(r.json()["error"], str)
    r = await client.post("/v1/models/nope:predict", headers=PREDICT, json={"instances": ROWS})
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    bad = {"instances": [[1, 2]]}
    r = await client.post(f"/v1/models/{MODEL}:predict", headers=PREDICT, json=bad)
    assert r.status_code == 400 and "model expects" in r.json()["error"]
    r = await client.post(f"/v1/models/{MODEL}:predict", headers=PREDICT, json={"x": 1})
    assert r.status_code == 400 and "instances" in r.json()["error"]


def test_request_id_and_traceparent_validation() -> None:
    assert accepted_request_id("abc-DEF_1.2:3") == "abc-DEF_1.2:3"
    for unsafe in ["", "a b", "x" * 129, "a\nb", "é", None]:
        created = accepted_request_id(unsafe)
        assert created != unsafe and len(created) == 32
    assert valid_traceparent(TRACEPARENT) == TRACEPARENT
    for bad in [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero parent id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  # v00 has 4 fields
        "garbage",
    ]:
        assert valid_traceparent(bad) is None
    future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
    assert valid_traceparent(future) == future


async def test_request_id_is_returned_forwarded_and_logged(
    recording_client: httpx.AsyncClient, recording_upstream: RecordingUpstream
) -> None:
    headers = {**PREDICT, "X-Request-ID": "order-42", "traceparent": TRACEPARENT}
    r = await recording_client.post(
        f"/v1/models/{MODEL}:predict", headers=headers, json={"instances": ROWS}
    )
    assert r.status_code == 200 and r.headers["X-Request-ID"] == "order-42"
    sent = recording_upstream.headers[-1]
    assert sent["x-request-id"] == "order-42" and sent["traceparent"] == TRACEPARENT

    r = await recording_client.post(
        f"/v1/models/{MODEL}:predict",
        headers={**PREDICT, "X-Request-ID": "bad id!", "traceparent": "nope"},
        json={"instances": ROWS},
    )
    created = r.headers["X-Request-ID"]
    assert created != "bad id!" and len(created) == 32
    sent = recording_upstream.headers[-1]
    assert sent["x-request-id"] == created and "traceparent" not in sent


async def test_log_lines_of_a_request_carry_its_id(
    key_prefix: str, redis_client: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing upstream call is logged (the throttled 5xx line); that line names the request."""
    app = create_app(make_settings(key_prefix, "http://127.0.0.1:9", retries=0))
    handler_filter = RequestIdFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        async with asgi_client(app) as c:
            with caplog.at_level(logging.INFO, logger="service"):
                caplog.clear()
                r = await c.post(
                    f"/v1/models/{MODEL}:predict",
                    headers={**PREDICT, "X-Request-ID": "failing-7"},
                    json={"instances": ROWS},
                )
    finally:
        caplog.handler.removeFilter(handler_filter)
    assert r.status_code == 502 and r.headers["X-Request-ID"] == "failing-7"
    lines = [rec for rec in caplog.records if "502" in rec.getMessage()]
    assert lines and all(rec.request_id == "failing-7" for rec in lines)


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    for r in [
        await client.get("/v2/health/live"),
        await client.get("/no/such/route"),
        await client.get(f"/v2/models/{MODEL}"),  # 401
        await client.get("/metrics"),
    ]:
        assert len(r.headers["X-Request-ID"]) == 32
    r = await client.get("/v2/health/live", headers={"X-Request-ID": "probe-1"})
    assert r.headers["X-Request-ID"] == "probe-1"
