"""Retries: only refused/reset connections and 502/503/504, bounded, reported to the hook."""

from __future__ import annotations

import numpy as np
import pytest

from service.errors import UpstreamStatus, UpstreamTimeout, UpstreamUnavailable
from service.upstream.client import UpstreamClient, is_retryable
from tests.fixtures_upstream import FakeUpstream, make_model

X = np.ones((2, 3), dtype=np.float32)


async def test_503_is_retried_then_succeeds(upstream: FakeUpstream) -> None:
    events: list[str] = []
    upstream.behave("status503_then_ok", fail_first=1)
    async with UpstreamClient(make_model(upstream.url(), retries=2), on_event=events.append) as c:
        out = await c.predict(X)
    assert out.shape == (2, 2)
    assert upstream.calls == 2
    assert events == ["retry"]


async def test_retries_stop_after_the_configured_count(upstream: FakeUpstream) -> None:
    upstream.behave("status503_then_ok", fail_first=10)
    async with UpstreamClient(make_model(upstream.url(), retries=2)) as client:
        with pytest.raises(UpstreamStatus, match="HTTP 503: model is loading"):
            await client.predict(X)
    assert upstream.calls == 3


async def test_zero_retries_means_one_attempt(upstream: FakeUpstream) -> None:
    upstream.behave("status503_then_ok", fail_first=1)
    async with UpstreamClient(make_model(upstream.url(), retries=0)) as client:
        with pytest.raises(UpstreamStatus):
            await client.predict(X)
    assert upstream.calls == 1


async def test_500_is_not_retried(upstream: FakeUpstream) -> None:
    upstream.behave("status500")
    async with UpstreamClient(make_model(upstream.url(), retries=2)) as client:
        with pytest.raises(UpstreamStatus):
            await client.predict(X)
    assert upstream.calls == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (UpstreamStatus("x", upstream_status=502), True),
        (UpstreamStatus("x", upstream_status=503), True),
        (UpstreamStatus("x", upstream_status=504), True),
        (UpstreamStatus("x", upstream_status=500), False),
        (UpstreamStatus("x", upstream_status=429), False),
        (UpstreamUnavailable("refused"), True),
        (UpstreamTimeout("slow"), False),
    ],
)
def test_retry_policy(error: Exception, expected: bool) -> None:
    assert is_retryable(error) is expected
