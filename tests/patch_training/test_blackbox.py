"""Querying the black box for training: the serving adapter, batched, cached by content."""

from __future__ import annotations

import numpy as np
import redis.asyncio as aioredis

from patch_training.blackbox import OutputCache, query_log_probs
from service.eraser_math import log_softmax
from tests.fixtures_upstream import V2_PATH, fake_upstream, make_model, reference_logits


async def test_answers_are_the_adapter_s_log_probs_in_row_order(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    x = np.random.default_rng(0).standard_normal((70, 3)).astype(np.float32)
    seen: list[int] = []
    async with fake_upstream() as server:
        model = make_model(f"http://127.0.0.1:{server.port}{V2_PATH}")
        log_p, cached = await query_log_probs(model, x, None, 16, 3, seen.append)
        assert server.calls == 5  # ceil(70 / 16)
    np.testing.assert_allclose(log_p, log_softmax(reference_logits(x, 2)), atol=1e-6)
    assert not cached and sum(seen) == 70


async def test_a_second_query_of_the_same_rows_is_served_from_the_cache(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    cache = OutputCache(redis_client, key_prefix, ttl_s=60)
    x = np.random.default_rng(1).standard_normal((20, 3)).astype(np.float32)
    async with fake_upstream() as server:
        model = make_model(f"http://127.0.0.1:{server.port}{V2_PATH}")
        first, _ = await query_log_probs(model, x, cache)
        again, cached = await query_log_probs(model, x, cache)
        _, other_cached = await query_log_probs(model, x + 1, cache)
        assert server.calls == 2  # the first and the changed rows only
    np.testing.assert_array_equal(first, again)
    assert cached and not other_cached
    ttl = await redis_client.ttl(f"{key_prefix}:bb_cache:{OutputCache.key_for(model, x)}")
    assert 0 < ttl <= 60


def test_cache_key_changes_with_the_endpoint_and_the_class_order() -> None:
    x = np.zeros((2, 3), np.float32)
    a = make_model("http://127.0.0.1:1/v2/models/m/infer")
    b = make_model("http://127.0.0.1:2/v2/models/m/infer")
    c = a.model_copy(update={"classes": ["c1", "c0"]})
    assert len({OutputCache.key_for(m, x) for m in (a, b, c)}) == 3
