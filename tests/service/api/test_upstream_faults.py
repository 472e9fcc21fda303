"""A misbehaving upstream (a real loopback server) becomes the right status code and message."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from service.api.app import create_app
from service.metrics import GatewayMetrics
from tests.fixtures_upstream import FakeUpstream, fake_upstream, refused_port
from tests.service.api.conftest import MODEL, PREDICT, make_settings

ROWS = [[25, 3, 0, 0, 1, 1, 1]]
FAULT_KNOBS = {
    "read_timeout_s": 0.3,
    "retries": 1,
    "retry_backoff_s": 0.01,
    "breaker_threshold": 3,
    "breaker_reset_s": 0.3,
}


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as server:
        yield server


def gateway_for(url: str, key_prefix: str, metrics: GatewayMetrics) -> FastAPI:
    settings = make_settings(key_prefix, "", url=url, **FAULT_KNOBS)
    return create_app(settings, metrics)


async def predict(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS})


@pytest.mark.parametrize(
    ("mode", "status", "code", "message"),
    [
        ("slow", 504, "upstream_timeout", "did not answer within 0.3 s"),
        ("status500", 502, "upstream_status", "HTTP 500"),
        ("garbage", 502, "upstream_bad_response", "unparseable JSON body"),
        ("wrong_classes", 502, "upstream_bad_response", "answered 3 classes, model has 2"),
        ("nan", 502, "upstream_bad_response", "NaN"),
    ],
)
async def test_upstream_faults_map_to_gateway_errors(
    upstream: FakeUpstream,
    key_prefix: str,
    redis_client: object,
    mode: str,
    status: int,
    code: str,
    message: str,
) -> None:
    upstream.behave(mode, delay_s=2.0)
    app = gateway_for(upstream.url(), key_prefix, GatewayMetrics())
    async with app.router.lifespan_context(app), client_for(app) as client:
        r = await predict(client)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and message in error["message"], error


async def test_refused_connection_is_a_502_that_says_so(
    key_prefix: str, redis_client: object
) -> None:
    url = f"http://127.0.0.1:{refused_port()}/v2/models/m/infer"
    app = gateway_for(url, key_prefix, GatewayMetrics())
    async with app.router.lifespan_context(app), client_for(app) as client:
        r = await predict(client)
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert "cannot connect to upstream" in r.json()["error"]["message"]


async def test_breaker_opens_fails_fast_and_recovers(
    upstream: FakeUpstream, key_prefix: str, redis_client: object
) -> None:
    metrics = GatewayMetrics()
    app = gateway_for(upstream.url(), key_prefix, metrics)
    upstream.behave("status500")
    async with app.router.lifespan_context(app), client_for(app) as client:
        for _ in range(3):
            assert (await predict(client)).status_code == 502
        calls = upstream.calls
        opened = await predict(client)
        assert opened.status_code == 503, opened.text
        assert opened.json()["error"]["code"] == "upstream_circuit_open"
        assert int(opened.headers["Retry-After"]) >= 1
        assert upstream.calls == calls  # failed fast: the upstream was not called
        gauge = {"model": MODEL}
        assert metrics.registry.get_sample_value("eraser_upstream_breaker_open", gauge) == 1.0

        upstream.behave("ok")
        await asyncio.sleep(0.35)
        recovered = await predict(client)
        assert recovered.status_code == 200, recovered.text
        assert metrics.registry.get_sample_value("eraser_upstream_breaker_open", gauge) == 0.0
    events = {"model": MODEL, "event": "breaker_open"}
    assert metrics.registry.get_sample_value("eraser_upstream_events_total", events) == 1.0


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
