"""Circuit breaker: opens after consecutive failures, fails fast without touching the upstream,
admits one trial after the open period, backs that period off while trials fail, and closes once
the upstream is healthy."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

import numpy as np
import pytest

from service.errors import CircuitOpen, UpstreamBadResponse, UpstreamStatus, UpstreamTimeout
from service.upstream.breaker import JITTER
from service.upstream.client import UpstreamClient
from tests.fixtures_upstream import FakeUpstream, make_model

X = np.ones((2, 3), dtype=np.float32)
RESET_S = 0.2
BACKOFF = {"breaker_reset_s": 0.1, "breaker_backoff_factor": 2.0, "breaker_max_reset_s": 0.8}
CALL_EVERY_S = 0.01


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


@dataclass
class Traffic:
    """What a steady stream of calls saw: when each admitted call started, and every rejection."""

    admitted_at: list[float]
    rejections: list[CircuitOpen]
    succeeded_at: float | None = None


async def steady_traffic(client: UpstreamClient, until: float, *, stop_on_success: bool) -> Traffic:
    """One call every ``CALL_EVERY_S`` (a busy gateway) until the monotonic deadline ``until``."""
    traffic = Traffic([], [])
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            await client.predict(X)
        except CircuitOpen as rejected:
            traffic.rejections.append(rejected)
        except UpstreamStatus:
            traffic.admitted_at.append(started)
        else:
            traffic.admitted_at.append(started)
            traffic.succeeded_at = time.monotonic()
            if stop_on_success:
                break
        await asyncio.sleep(CALL_EVERY_S)
    return traffic


def open_periods(n: int) -> list[float]:
    """The un-jittered open periods of BACKOFF: the first, then doubled per failed trial, capped."""
    first, factor, cap = BACKOFF.values()
    return [min(cap, first * factor**i) for i in range(n)]


async def test_traffic_gets_through_within_a_second_of_a_short_outage_ending(
    upstream: FakeUpstream,
) -> None:
    """With the default breaker settings: the black box is down for ~1 s, then healthy."""
    upstream.behave("status500")
    async with UpstreamClient(make_model(upstream.url(), retries=0)) as client:
        down_since = time.monotonic()
        during = await steady_traffic(client, down_since + 1.0, stop_on_success=True)
        assert during.succeeded_at is None and client.breaker_state == "open"
        upstream.behave("ok")
        back_at = time.monotonic()
        after = await steady_traffic(client, back_at + 10.0, stop_on_success=True)
    assert after.succeeded_at is not None
    assert after.succeeded_at - back_at < 1.5
    assert client.breaker_state == "closed"


async def test_a_black_box_that_stays_down_gets_backed_off_trial_calls(
    upstream: FakeUpstream,
) -> None:
    upstream.behave("status500")
    threshold = 3
    model = make_model(upstream.url(), retries=0, breaker_threshold=threshold, **BACKOFF)
    async with UpstreamClient(model) as client:
        traffic = await steady_traffic(client, time.monotonic() + 3.0, stop_on_success=False)
    trials = traffic.admitted_at[threshold:]
    assert upstream.calls == len(traffic.admitted_at)
    # Gaps between trials are at least the (jitter-shortened) schedule 0.1, 0.2, 0.4, 0.8, 0.8...
    # which caps their number in 3 s however busy the caller; fewer is fine on a slow machine.
    gaps = np.diff([traffic.admitted_at[threshold - 1], *trials])
    periods = open_periods(len(gaps))
    assert all(gap >= (1 - JITTER) * p - 0.005 for gap, p in zip(gaps, periods, strict=True))
    most = sum(np.cumsum([(1 - JITTER) * p for p in open_periods(20)]) <= 3.0)
    assert 2 <= len(trials) <= most <= 6
    assert len(traffic.rejections) > 3 * len(trials)  # callers were turned away meanwhile
    longest_wait = max(r.details["retry_after_s"] for r in traffic.rejections)
    assert longest_wait <= BACKOFF["breaker_max_reset_s"]


async def test_a_successful_trial_resets_the_backoff(upstream: FakeUpstream) -> None:
    upstream.behave("status500")
    model = make_model(upstream.url(), retries=0, breaker_threshold=1, **BACKOFF)
    async with UpstreamClient(model) as client:
        await fail_times(client, 1, UpstreamStatus)
        for period in open_periods(3):  # three failed trials: the period grows to 0.8 s
            await asyncio.sleep(period + 0.02)
            await fail_times(client, 1, UpstreamStatus)
        with pytest.raises(CircuitOpen) as grown:
            await client.predict(X)
        assert grown.value.details["retry_after_s"] > BACKOFF["breaker_reset_s"]
        upstream.behave("ok")
        await asyncio.sleep(BACKOFF["breaker_max_reset_s"] + 0.02)
        await client.predict(X)
        assert client.breaker_state == "closed"
        upstream.behave("status500")
        await fail_times(client, 1, UpstreamStatus)
        with pytest.raises(CircuitOpen) as reopened:
            await client.predict(X)
    assert reopened.value.details["retry_after_s"] <= BACKOFF["breaker_reset_s"]
