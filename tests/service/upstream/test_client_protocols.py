"""Round trips through a real HTTP server for each protocol and output kind."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.eraser_math import log_sigmoid_pair, log_softmax
from service.errors import InvalidInstances
from service.settings import OutputKind, WireProtocol
from service.upstream.client import UpstreamClient
from tests.fixtures_upstream import FakeUpstream, make_model, reference_logits

X = np.array([[0.1, 0.2, 0.3], [1.0, -2.0, 0.5], [3.0, 3.0, 3.0]], dtype=np.float32)


@pytest.mark.parametrize("protocol", list(WireProtocol))
async def test_round_trip_returns_log_softmax_of_the_upstream_logits(
    upstream: FakeUpstream, protocol: WireProtocol
) -> None:
    upstream.behave("ok", classes=3)
    model = make_model(upstream.url(protocol), protocol=protocol, classes=3)
    async with UpstreamClient(model) as client:
        log_p = await client.predict(X)
    assert log_p.dtype == np.float64
    np.testing.assert_allclose(log_p, log_softmax(reference_logits(X, 3)), rtol=1e-12)
    assert upstream.batch_sizes == [3]


async def test_oip_v2_asks_for_the_configured_output_and_reads_it(upstream: FakeUpstream) -> None:
    upstream.behave("ok", classes=2)
    model = make_model(upstream.url(), output_name="predict_proba")
    async with UpstreamClient(model) as client:
        await client.predict(X)
    assert upstream.bodies[0]["outputs"] == [{"name": "predict_proba"}]


async def test_oip_v2_request_carries_the_input_name_and_batch_shape(
    upstream: FakeUpstream,
) -> None:
    model = make_model(upstream.url(), input_name="features")
    async with UpstreamClient(model) as client:
        await client.predict(X)
    tensor = upstream.bodies[0]["inputs"][0]
    assert (tensor["name"], tensor["shape"], tensor["datatype"]) == ("features", [3, 3], "FP32")


@pytest.mark.parametrize("protocol", list(WireProtocol))
async def test_sigmoid_single_column_becomes_the_two_class_pair(
    upstream: FakeUpstream, protocol: WireProtocol
) -> None:
    upstream.behave("ok", classes=2, flat=True)  # [N] logits
    model = make_model(upstream.url(protocol), protocol=protocol, kind=OutputKind.SIGMOID_LOGITS)
    async with UpstreamClient(model) as client:
        log_p = await client.predict(X)
    eta = reference_logits(X, 2)[:, -1]
    assert log_p.shape == (3, 2)
    np.testing.assert_allclose(log_p, log_sigmoid_pair(eta), rtol=1e-12)
    np.testing.assert_allclose(np.exp(log_p).sum(axis=1), 1.0)


async def test_configured_headers_reach_the_upstream_and_replace_ours_case_insensitively(
    upstream: FakeUpstream,
) -> None:
    seen: list[tuple[list[str], list[str]]] = []
    original = upstream.handle

    async def spy(request, protocol):  # type: ignore[no-untyped-def]
        seen.append(
            (request.headers.getall("Authorization"), request.headers.getall("Content-Type"))
        )
        return await original(request, protocol)

    upstream.handle = spy  # type: ignore[method-assign]
    headers = {"Authorization": "Bearer t", "content-type": "application/json; charset=utf-8"}
    async with UpstreamClient(make_model(upstream.url(), headers=headers)) as client:
        await client.predict(X)
    assert seen == [(["Bearer t"], ["application/json; charset=utf-8"])]


async def test_empty_batch_returns_empty_without_calling_upstream(upstream: FakeUpstream) -> None:
    async with UpstreamClient(make_model(upstream.url())) as client:
        out = await client.predict(np.empty((0, 3), dtype=np.float32))
    assert out.shape == (0, 2)
    assert upstream.calls == 0


async def test_batch_with_the_wrong_instance_shape_is_refused_before_the_upstream(
    upstream: FakeUpstream,
) -> None:
    async with UpstreamClient(make_model(upstream.url())) as client:
        with pytest.raises(InvalidInstances, match=r"shape \[2, 4\]; model m expects \[N, 3\]"):
            await client.predict(np.zeros((2, 4), dtype=np.float32))
    assert upstream.calls == 0


async def test_predict_before_start_is_a_clear_programming_error(upstream: FakeUpstream) -> None:
    client = UpstreamClient(make_model(upstream.url()))
    with pytest.raises(RuntimeError, match=r"start\(\) was not called"):
        await client.predict(X)


def test_url_that_is_not_http_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="must be http"):
        UpstreamClient(make_model("ftp://host/x"))


async def test_sent_resolves_once_the_request_is_out_and_before_the_answer(
    upstream: FakeUpstream,
) -> None:
    upstream.behave("ok", classes=2, latency=lambda _: 0.3)
    model = make_model(upstream.url())
    async with UpstreamClient(model) as client:
        sent = asyncio.get_running_loop().create_future()
        call = asyncio.ensure_future(client.predict(X, sent=sent))
        await asyncio.wait_for(sent, timeout=0.2)  # well before the 0.3 s answer
        assert not call.done()
        await call
    assert upstream.calls == 1
