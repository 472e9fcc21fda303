"""predict_many: batches, bounded concurrency, rows back in input order."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.eraser_math import log_softmax
from service.errors import UpstreamStatus
from service.upstream.client import UpstreamClient
from tests.fixtures_upstream import FakeUpstream, make_model, reference_logits

RNG = np.random.default_rng(0)
X = RNG.normal(size=(10, 3)).astype(np.float32)


async def test_rows_come_back_in_order_even_when_batches_finish_out_of_order(
    upstream: FakeUpstream,
) -> None:
    upstream.behave("ok", latency=lambda call: 0.05 * (4 - call))  # first batch answers last
    async with UpstreamClient(make_model(upstream.url())) as client:
        out = await client.predict_many(X, batch_size=3, concurrency=4)
    np.testing.assert_allclose(out, log_softmax(reference_logits(X, 2)), rtol=1e-12)
    assert sorted(upstream.batch_sizes) == [1, 3, 3, 3]


async def test_concurrency_bounds_requests_in_flight(upstream: FakeUpstream) -> None:
    in_flight = peak = 0
    original = upstream.handle

    async def counting(request, protocol):  # type: ignore[no-untyped-def]
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        try:
            return await original(request, protocol)
        finally:
            in_flight -= 1

    upstream.handle = counting  # type: ignore[method-assign]
    async with UpstreamClient(make_model(upstream.url())) as client:
        await client.predict_many(X, batch_size=1, concurrency=3)
    assert peak == 3
    assert upstream.calls == 10


async def test_progress_reports_each_finished_batch_size(upstream: FakeUpstream) -> None:
    done: list[int] = []
    async with UpstreamClient(make_model(upstream.url())) as client:
        await client.predict_many(X, batch_size=4, concurrency=1, progress=done.append)
    assert done == [4, 4, 2]


async def test_a_failing_batch_raises_its_own_error(upstream: FakeUpstream) -> None:
    upstream.behave("status500")
    async with UpstreamClient(make_model(upstream.url(), breaker_threshold=100)) as client:
        with pytest.raises(UpstreamStatus, match="HTTP 500"):
            await client.predict_many(X, batch_size=2, concurrency=2)


async def test_empty_input_gives_empty_output(upstream: FakeUpstream) -> None:
    async with UpstreamClient(make_model(upstream.url())) as client:
        out = await client.predict_many(np.empty((0, 3), dtype=np.float32))
    assert out.shape == (0, 2)
    assert upstream.calls == 0


@pytest.mark.parametrize(("batch_size", "concurrency"), [(0, 1), (1, 0)])
async def test_non_positive_batch_size_or_concurrency_is_refused(
    upstream: FakeUpstream, batch_size: int, concurrency: int
) -> None:
    async with UpstreamClient(make_model(upstream.url())) as client:
        with pytest.raises(ValueError, match="must be >= 1"):
            await client.predict_many(X, batch_size=batch_size, concurrency=concurrency)
