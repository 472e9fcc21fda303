"""Every way the upstream can misbehave becomes the right UpstreamError, with a useful message."""

from __future__ import annotations

import time

import aiohttp
import numpy as np
import pytest

from service.errors import (
    UpstreamBadResponse,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from service.upstream.client import UpstreamClient
from tests.fixtures_upstream import FakeUpstream, make_model, refused_port

X = np.ones((2, 3), dtype=np.float32)


async def test_read_timeout_is_upstream_timeout_and_not_retried(upstream: FakeUpstream) -> None:
    upstream.behave("slow", delay_s=5.0)
    model = make_model(upstream.url(), read_timeout_s=0.2, retries=2)
    async with UpstreamClient(model) as client:
        started = time.perf_counter()
        with pytest.raises(UpstreamTimeout, match=r"upstream did not answer within 0.2 s"):
            await client.predict(X)
        elapsed = time.perf_counter() - started
    assert upstream.calls == 1
    assert elapsed < 1.0


async def test_http_500_is_upstream_status_with_the_body_and_not_retried(
    upstream: FakeUpstream,
) -> None:
    upstream.behave("status500")
    async with UpstreamClient(make_model(upstream.url(), retries=3)) as client:
        with pytest.raises(UpstreamStatus) as caught:
            await client.predict(X)
    assert (
        str(caught.value) == "upstream returned HTTP 500: model crashed: CUDA error: out of memory"
    )
    assert caught.value.details["upstream_status"] == 500
    assert upstream.calls == 1


async def test_http_4xx_is_not_retried(upstream: FakeUpstream) -> None:
    upstream.behave("status404")
    async with UpstreamClient(make_model(upstream.url(), retries=3)) as client:
        with pytest.raises(UpstreamStatus, match=r"HTTP 404: \{\"error\": \"Model m not found\"\}"):
            await client.predict(X)
    assert upstream.calls == 1


async def test_status_body_is_cut_to_200_characters(upstream: FakeUpstream) -> None:
    upstream.behave("status500")

    async def long_body(request, protocol):  # type: ignore[no-untyped-def]
        return aiohttp.web.Response(status=500, text="x" * 5000)

    upstream.handle = long_body  # type: ignore[method-assign]
    async with UpstreamClient(make_model(upstream.url())) as client:
        with pytest.raises(UpstreamStatus) as caught:
            await client.predict(X)
    assert str(caught.value) == "upstream returned HTTP 500: " + "x" * 200


async def test_non_json_answer_is_bad_response(upstream: FakeUpstream) -> None:
    upstream.behave("garbage")
    async with UpstreamClient(make_model(upstream.url())) as client:
        with pytest.raises(UpstreamBadResponse, match=r"unparseable JSON body: .*<html>"):
            await client.predict(X)


async def test_wrong_class_count_is_bad_response(upstream: FakeUpstream) -> None:
    upstream.behave("wrong_classes", classes=2)
    async with UpstreamClient(make_model(upstream.url(), retries=2)) as client:
        with pytest.raises(UpstreamBadResponse, match="upstream answered 3 classes, model has 2"):
            await client.predict(X)
    assert upstream.calls == 1


async def test_nan_in_answer_is_bad_response(upstream: FakeUpstream) -> None:
    upstream.behave("nan")
    async with UpstreamClient(make_model(upstream.url())) as client:
        with pytest.raises(UpstreamBadResponse, match="upstream output contains NaN"):
            await client.predict(X)


async def test_missing_output_tensor_is_bad_response(upstream: FakeUpstream) -> None:
    upstream.behave("ok", answer_names=["predict"])
    model = make_model(upstream.url(), output_name="predict_proba")
    async with UpstreamClient(model) as client:
        with pytest.raises(UpstreamBadResponse, match="no output tensor named 'predict_proba'"):
            await client.predict(X)


async def test_connection_refused_is_unavailable_after_the_retries() -> None:
    events: list[str] = []
    port = refused_port()
    model = make_model(f"http://127.0.0.1:{port}/v2/models/m/infer", retries=2)
    async with UpstreamClient(model, on_event=events.append) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.predict(X)
    assert str(caught.value) == (
        f"cannot connect to upstream http://127.0.0.1:{port}/v2/models/m/infer: Connection refused"
    )
    assert events == ["retry", "retry", "error:upstream_unavailable"]


async def test_server_hanging_up_is_unavailable(upstream: FakeUpstream) -> None:
    upstream.behave("disconnect")
    async with UpstreamClient(make_model(upstream.url(), retries=1)) as client:
        with pytest.raises(UpstreamUnavailable, match="closed the connection without answering"):
            await client.predict(X)
    assert upstream.calls == 2


async def test_credentials_and_query_in_the_url_never_reach_messages() -> None:
    port = refused_port()
    url = f"http://user:secret@127.0.0.1:{port}/infer?api_key=hunter2"
    async with UpstreamClient(make_model(url, retries=0)) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.predict(X)
    assert "secret" not in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert repr(client).endswith(f"url=http://127.0.0.1:{port}/infer>")


@pytest.mark.parametrize("mode", ["slow", "status500", "garbage", "disconnect"])
async def test_no_raw_aiohttp_or_asyncio_exception_escapes(
    upstream: FakeUpstream, mode: str
) -> None:
    upstream.behave(mode, delay_s=5.0)  # type: ignore[arg-type]
    async with UpstreamClient(make_model(upstream.url(), read_timeout_s=0.2)) as client:
        with pytest.raises(UpstreamError):
            await client.predict(X)


async def test_every_failure_is_reported_to_the_event_hook_by_code(upstream: FakeUpstream) -> None:
    events: list[str] = []
    upstream.behave("garbage")
    async with UpstreamClient(make_model(upstream.url()), on_event=events.append) as client:
        with pytest.raises(UpstreamBadResponse):
            await client.predict(X)
        upstream.behave("status500")
        with pytest.raises(UpstreamStatus):
            await client.predict(X)
    assert events == ["error:upstream_bad_response", "error:upstream_status"]


async def test_a_failing_event_hook_does_not_break_predictions(upstream: FakeUpstream) -> None:
    def broken_hook(event: str) -> None:
        raise RuntimeError("metrics are down")

    upstream.behave("status503_then_ok", fail_first=1)
    async with UpstreamClient(make_model(upstream.url()), on_event=broken_hook) as client:
        out = await client.predict(X)
    assert out.shape == (2, 2)
