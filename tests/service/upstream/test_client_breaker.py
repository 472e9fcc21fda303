"""Circuit breaker: opens after consecutive failures, fails fast without touching the upstream,
admits one trial after breaker_reset_s, and closes once the upstream is healthy."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from service.errors import CircuitOpen, UpstreamBadResponse, UpstreamStatus, UpstreamTimeout
from service.upstream.client import UpstreamClient
from tests.fixtures_upstream import FakeUpstream, make_model

X = np.ones((2, 3), dtype=np.float32)
RESET_S = 0.2


def breaker_model(upstream: FakeUpstream, threshold: int = 3, **kw: object):  # type: ignore[no-untyped-def]
    return make_model(
        upstream.url(), retries=0, breaker_threshold=threshold, breaker_reset_s=RESET_S, **kw
    )


async def fail_times(client: UpstreamClient, n: int, error: type[Exception]) -> None:
    for _ in range(n):
        with pytest.raises(error):
            await client.predict(X)


async def test_breaker_opens_after_threshold_and_then_fails_fast(upstream: FakeUpstream) -> None:
    events: list[str] = []
    upstream.behave("status500")
    model = make_model(upstream.url(), retries=0, breaker_threshold=3, breaker_reset_s=5.0)
    async with UpstreamClient(model, on_event=events.append) as client:
        await fail_times(client, 3, UpstreamStatus)
        assert client.breaker_state == "open"
        with pytest.raises(CircuitOpen) as caught:
            await client.predict(X)
    assert upstream.calls == 3
    assert caught.value.status_code == 503
    assert 4.0 < caught.value.details["retry_after_s"] <= 5.0
    assert re.fullmatch(
        r"circuit open for upstream of model m after 3 consecutive failures; "
        r"retrying in (4\.\d\d|5\.00) s",
        str(caught.value),
    )
    assert events.count("breaker_open") == 1
    assert events[-1] == "error:upstream_circuit_open"


async def test_breaker_stays_closed_below_threshold(upstream: FakeUpstream) -> None:
    upstream.behave("status500")
    async with UpstreamClient(breaker_model(upstream)) as client:
        await fail_times(client, 2, UpstreamStatus)
        assert client.breaker_state == "closed"
        upstream.behave("ok")
        await client.predict(X)
        upstream.behave("status500")
        await fail_times(client, 2, UpstreamStatus)  # count restarted after the success
        assert client.breaker_state == "closed"
    assert upstream.calls == 5


async def test_breaker_recovers_after_reset_once_upstream_is_healthy(
    upstream: FakeUpstream,
) -> None:
    upstream.behave("status500")
    async with UpstreamClient(breaker_model(upstream)) as client:
        await fail_times(client, 3, UpstreamStatus)
        upstream.behave("ok")
        with pytest.raises(CircuitOpen):
            await client.predict(X)
        await asyncio.sleep(RESET_S + 0.05)
        out = await client.predict(X)
        assert client.breaker_state == "closed"
        await client.predict(X)
    assert out.shape == (2, 2)
    assert upstream.calls == 5


async def test_failed_trial_reopens_the_circuit(upstream: FakeUpstream) -> None:
    upstream.behave("status500")
    async with UpstreamClient(breaker_model(upstream)) as client:
        await fail_times(client, 3, UpstreamStatus)
        await asyncio.sleep(RESET_S + 0.05)
        await fail_times(client, 1, UpstreamStatus)  # the trial
        assert client.breaker_state == "open"
        await fail_times(client, 1, CircuitOpen)
    assert upstream.calls == 4


async def test_half_open_admits_a_single_trial(upstream: FakeUpstream) -> None:
    upstream.behave("status500")
    model = breaker_model(upstream, read_timeout_s=2.0)
    async with UpstreamClient(model) as client:
        await fail_times(client, 3, UpstreamStatus)
        await asyncio.sleep(RESET_S + 0.05)
        upstream.behave("ok", latency=lambda _: 0.3)
        trial = asyncio.create_task(client.predict(X))
        await asyncio.sleep(0.02)
        assert client.breaker_state == "half-opened"
        with pytest.raises(CircuitOpen, match="a trial call is in flight"):
            await client.predict(X)
        await trial
        assert client.breaker_state == "closed"
    assert upstream.calls == 4


async def test_timeouts_count_as_failures(upstream: FakeUpstream) -> None:
    upstream.behave("slow", delay_s=5.0)
    async with UpstreamClient(breaker_model(upstream, threshold=2, read_timeout_s=0.1)) as client:
        await fail_times(client, 2, UpstreamTimeout)
        assert client.breaker_state == "open"


@pytest.mark.parametrize("mode", ["garbage", "status404"])
async def test_bad_bodies_and_4xx_do_not_open_the_circuit(
    upstream: FakeUpstream, mode: str
) -> None:
    upstream.behave(mode)  # type: ignore[arg-type]
    async with UpstreamClient(breaker_model(upstream, threshold=1)) as client:
        await fail_times(client, 3, UpstreamBadResponse if mode == "garbage" else UpstreamStatus)
        assert client.breaker_state == "closed"
    assert upstream.calls == 3


async def test_cancelled_calls_do_not_count_as_failures(upstream: FakeUpstream) -> None:
    upstream.behave("slow", delay_s=5.0)
    async with UpstreamClient(breaker_model(upstream, threshold=1)) as client:
        call = asyncio.create_task(client.predict(X))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert client.breaker_state == "closed"


async def test_one_call_counts_once_however_many_retries_it_made(upstream: FakeUpstream) -> None:
    upstream.behave("status503_then_ok", fail_first=100)
    model = make_model(upstream.url(), retries=2, breaker_threshold=2, breaker_reset_s=RESET_S)
    async with UpstreamClient(model) as client:
        await fail_times(client, 1, UpstreamStatus)
        assert client.breaker_state == "closed"
        await fail_times(client, 1, UpstreamStatus)
        assert client.breaker_state == "open"
    assert upstream.calls == 6


async def test_each_model_has_its_own_circuit(upstream: FakeUpstream) -> None:
    upstream.behave("status500")
    async with (
        UpstreamClient(breaker_model(upstream, threshold=1)) as first,
        UpstreamClient(breaker_model(upstream, threshold=1)) as second,
    ):
        await fail_times(first, 1, UpstreamStatus)
        assert (first.breaker_state, second.breaker_state) == ("open", "closed")


async def test_rejections_do_not_pile_up_frames_on_purgatorys_exception(
    upstream: FakeUpstream,
) -> None:
    """purgatory raises one OpenedState instance per rejection; each raise would otherwise append
    frames (holding request bodies) to its traceback for as long as the circuit stays open."""
    upstream.behave("status500")
    async with UpstreamClient(breaker_model(upstream, threshold=1)) as client:
        await fail_times(client, 1, UpstreamStatus)
        await fail_times(client, 50, CircuitOpen)
        opened_state = client._breaker._ctx._state
        assert isinstance(opened_state, Exception)
        assert opened_state.__traceback__ is None
