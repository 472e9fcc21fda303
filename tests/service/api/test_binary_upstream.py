"""``upstream.binary_data``: the gateway's own call to the black box in the binary tensor data
extension, against the stand-in (which speaks it, as Triton does), answering exactly what the
JSON call answers (to float32 precision: JSON carries the stand-in's FP32 logits as shortest
decimals, which read back as float64 differ from the exact FP32 bytes by under one FP32 ulp)
— through the upstream client alone, through the v2 route, and with the
configured output named or not."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi import Request

from blackbox.model import MlpWeights
from blackbox.server import create_app as blackbox_app
from service.api.app import create_app
from service.oip import HEADER_LENGTH
from service.settings import ModelConfig
from service.upstream.client import UpstreamClient
from tests.servers import running_server
from tests.service.api.conftest import MODEL, PREDICT, make_settings, model_config

FP32_ULP = 1e-6  # a few FP32 ulps (2^-23 is 1.2e-7)
ROWS = np.array([[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0], [19, 7, 1, 2, 0, 1, 0]])


@pytest.fixture(scope="module")
def recorded(blackbox_model: MlpWeights) -> Iterator[tuple[str, list[dict]]]:
    """The stand-in on loopback, recording each infer request's headers and body length."""
    app = blackbox_app(blackbox_model, name=MODEL)
    seen: list[dict] = []

    @app.middleware("http")
    async def record(request: Request, call_next):  # type: ignore[no-untyped-def]
        seen.append({**request.headers, "body": len(await request.body())})
        response = await call_next(request)
        seen[-1]["answer"] = response.headers.get(HEADER_LENGTH)
        return response

    with running_server(app) as url:
        yield url, seen


@pytest.mark.parametrize("output_name", ["logits", None], ids=["named", "first-output"])
async def test_binary_and_json_upstream_calls_answer_the_same(
    recorded: tuple[str, list[dict]], output_name: str | None
) -> None:
    url, seen = recorded
    answers = {}
    for binary in (False, True):
        config = model_config(url, binary_data=binary, output_name=output_name)
        seen.clear()
        async with UpstreamClient(ModelConfig.model_validate(config)) as client:
            answers[binary] = await client.predict_typed(ROWS.astype(np.float32))
        (call,) = seen
        assert (HEADER_LENGTH.lower() in call) is binary
        assert (call["answer"] is not None) is binary  # the answer came back binary too
        if binary:
            assert call["content-type"] == "application/octet-stream"
            assert call["body"] == int(call[HEADER_LENGTH.lower()]) + ROWS.size * 4
    np.testing.assert_allclose(answers[True][0], answers[False][0], rtol=FP32_ULP, atol=FP32_ULP)
    assert answers[True][1] == answers[False][1] == "FP32"


async def test_many_batches_as_training_queries_them(recorded: tuple[str, list[dict]]) -> None:
    url, _ = recorded
    rows = np.random.default_rng(0).integers(0, 30, size=(300, 7)).astype(np.float32)
    got = {}
    for binary in (False, True):
        model = ModelConfig.model_validate(model_config(url, binary_data=binary))
        async with UpstreamClient(model) as client:
            got[binary] = await client.predict_many(rows, batch_size=64, concurrency=3)
    np.testing.assert_allclose(got[True], got[False], rtol=FP32_ULP, atol=FP32_ULP)


async def test_the_v2_route_answers_the_same_with_a_binary_upstream(
    recorded: tuple[str, list[dict]], key_prefix: str, redis_client: object
) -> None:
    url, seen = recorded
    body = {"inputs": [{"name": "x", "shape": [3, 7], "datatype": "INT32", "data": ROWS.tolist()}]}
    body["parameters"] = {"return_raw": True}
    answers = {}
    for binary in (False, True):
        app = create_app(make_settings(f"{key_prefix}-{binary}", url, binary_data=binary))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://g") as client:
                seen.clear()
                response = await client.post(
                    f"/v2/models/{MODEL}/infer", json=body, headers=PREDICT
                )
        assert response.status_code == 200, response.text
        assert (HEADER_LENGTH.lower() in seen[0]) is binary
        answers[binary] = response.json()["outputs"]
    for binary, json in zip(answers[True], answers[False], strict=True):
        assert {**binary, "data": None} == {**json, "data": None}
        np.testing.assert_allclose(binary["data"], json["data"], rtol=FP32_ULP, atol=FP32_ULP)
