"""Querying the black box for training: the serving adapter, batched, cached by content, and the
cache's entries authenticated (Redis is not trusted; see ``patch_training.blackbox``)."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from patch_training.blackbox import MAGIC, OutputCache, query_log_probs
from service.eraser_math import log_softmax
from service.settings import ModelConfig
from tests.conftest import SIGNING_KEY
from tests.fixtures_upstream import (
    V2_PATH,
    FakeUpstream,
    fake_upstream,
    make_model,
    reference_logits,
)


@pytest.fixture
def cache(redis_client: aioredis.Redis, key_prefix: str) -> OutputCache:
    return OutputCache(redis_client, key_prefix, ttl_s=60, signing_key=SIGNING_KEY)


@pytest.fixture
async def server() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as upstream:
        yield upstream


@pytest.fixture
def model(server: FakeUpstream) -> ModelConfig:
    return make_model(f"http://127.0.0.1:{server.port}{V2_PATH}")


def rows(seed: int, n: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)


def truth(x: np.ndarray) -> np.ndarray:
    return log_softmax(reference_logits(x, 2))


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


async def test_answers_are_the_adapter_s_log_probs_in_row_order(
    server: FakeUpstream, model: ModelConfig
) -> None:
    x = np.random.default_rng(0).standard_normal((70, 3)).astype(np.float32)
    seen: list[int] = []
    answers = await query_log_probs(model, x, None, 16, 3, seen.append)
    assert server.calls == 5  # ceil(70 / 16)
    np.testing.assert_allclose(answers.log_p, truth(x), atol=1e-6)
    assert not answers.cached and answers.refused is None and sum(seen) == 70


async def test_a_second_query_of_the_same_rows_is_served_from_the_cache(
    server: FakeUpstream,
    model: ModelConfig,
    cache: OutputCache,
    redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:
    x = rows(1)
    first = await query_log_probs(model, x, cache)
    again = await query_log_probs(model, x, cache)
    other = await query_log_probs(model, x + 1, cache)
    assert server.calls == 2  # the first and the changed rows only
    np.testing.assert_array_equal(first.log_p, again.log_p)
    assert again.cached and again.refused is None and not other.cached
    ttl = await redis_client.ttl(f"{key_prefix}:bb_cache:{OutputCache.key_for(model, x)}")
    assert 0 < ttl <= 60


def test_cache_key_changes_with_the_endpoint_and_the_class_order() -> None:
    x = np.zeros((2, 3), np.float32)
    a = make_model("http://127.0.0.1:1/v2/models/m/infer")
    b = make_model("http://127.0.0.1:2/v2/models/m/infer")
    c = a.model_copy(update={"classes": ["c1", "c0"]})
    assert len({OutputCache.key_for(m, x) for m in (a, b, c)}) == 3


def test_the_cache_needs_a_signing_key(redis_client: aioredis.Redis) -> None:
    with pytest.raises(ValueError, match="signing key"):
        OutputCache(redis_client, "p", 60, b"")


# ---- a tampered cache is never trained on ---------------------------------------------------


async def assert_refused_then_healed(
    server: FakeUpstream, model: ModelConfig, cache: OutputCache, x: np.ndarray, why: str
) -> None:
    """The bad entry is not used, the black box is asked again, and a good entry replaces it."""
    calls = server.calls
    answers = await query_log_probs(model, x, cache)
    assert not answers.cached and answers.refused is not None and why in answers.refused
    assert server.calls == calls + 1
    np.testing.assert_allclose(answers.log_p, truth(x), atol=1e-6)
    healed = await query_log_probs(model, x, cache)
    assert healed.cached and healed.refused is None and server.calls == calls + 1
    np.testing.assert_array_equal(healed.log_p, answers.log_p)


@pytest.mark.parametrize("keep_mac", [True, False], ids=["old-mac", "unsigned"])
async def test_rewritten_answers_are_refused_and_replaced(
    server: FakeUpstream,
    model: ModelConfig,
    cache: OutputCache,
    redis_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    keep_mac: bool,
) -> None:
    x = rows(2)
    await query_log_probs(model, x, cache)
    where = cache.redis_key(OutputCache.key_for(model, x))
    stored = await redis_client.get(where)
    forged = npy(truth(x)[:, ::-1].copy())  # every decision flipped, a well-formed npy
    head = stored[: len(MAGIC) + 65] if keep_mac else b""
    await redis_client.set(where, head + forged)
    with caplog.at_level(logging.WARNING, logger="patch_training.blackbox"):
        await assert_refused_then_healed(
            server, model, cache, x, "bad MAC" if keep_mac else "not an authenticated"
        )
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert where in warning.getMessage() and "refused" in warning.getMessage()


async def test_an_entry_copied_under_another_key_is_refused(
    server: FakeUpstream, model: ModelConfig, cache: OutputCache, redis_client: aioredis.Redis
) -> None:
    x, other = rows(3), rows(4)  # same shape: only the key binding tells them apart
    await query_log_probs(model, x, cache)
    entry = await redis_client.get(cache.redis_key(OutputCache.key_for(model, x)))
    await redis_client.set(cache.redis_key(OutputCache.key_for(model, other)), entry)
    await assert_refused_then_healed(server, model, cache, other, "bad MAC")


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00" * 7, b"not npy at all", MAGIC, MAGIC + b"z" * 65 + b"\x93NUMPY", b"\xff" * 4096],
)
async def test_garbage_is_refused_without_an_exception(
    server: FakeUpstream,
    model: ModelConfig,
    cache: OutputCache,
    redis_client: aioredis.Redis,
    garbage: bytes,
) -> None:
    x = rows(5)
    await redis_client.set(cache.redis_key(OutputCache.key_for(model, x)), garbage)
    await assert_refused_then_healed(server, model, cache, x, "")


async def test_an_entry_of_another_redis_type_is_refused_and_replaced(
    server: FakeUpstream, model: ModelConfig, cache: OutputCache, redis_client: aioredis.Redis
) -> None:
    x = rows(6)
    await redis_client.hset(cache.redis_key(OutputCache.key_for(model, x)), "a", "b")
    await assert_refused_then_healed(server, model, cache, x, "unreadable entry")


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        (np.zeros((20, 3)), "declares"),  # wrong class count
        (np.zeros((21, 2)), "declares"),  # wrong row count
        (np.zeros((20, 2), np.float32), "declares"),  # not what put writes
        (np.full((20, 2), np.nan), "non-finite"),
        (np.full((20, 2), -np.inf), "non-finite"),
    ],
)
async def test_an_authentic_entry_of_the_wrong_shape_or_non_finite_is_refused(
    server: FakeUpstream,
    model: ModelConfig,
    cache: OutputCache,
    redis_client: aioredis.Redis,
    stored: np.ndarray,
    why: str,
) -> None:
    """Behind a valid MAC (a bug, a changed model table): still checked before it is used."""
    x = rows(7)
    await store_signed(redis_client, cache.redis_key(OutputCache.key_for(model, x)), npy(stored))
    await assert_refused_then_healed(server, model, cache, x, why)


async def test_an_entry_larger_than_the_answer_is_refused_before_its_mac_is_computed(
    server: FakeUpstream, model: ModelConfig, cache: OutputCache, redis_client: aioredis.Redis
) -> None:
    x = rows(8)
    where = cache.redis_key(OutputCache.key_for(model, x))
    await redis_client.set(where, MAGIC + b"0" * 65 + b"\x00" * 200_000)
    await assert_refused_then_healed(server, model, cache, x, "bytes, more than")


async def test_an_entry_under_another_signing_key_is_refused(
    server: FakeUpstream, model: ModelConfig, cache: OutputCache, redis_client: aioredis.Redis,
    key_prefix: str,
) -> None:  # fmt: skip
    x = rows(9)
    elsewhere = OutputCache(redis_client, key_prefix, 60, b"another deployment's key")
    await query_log_probs(model, x, elsewhere)
    await assert_refused_then_healed(server, model, cache, x, "bad MAC")


async def store_signed(redis_client: aioredis.Redis, where: str, raw_npy: bytes) -> None:
    """Sign arbitrary npy bytes the way ``put`` does (only a holder of the key can)."""
    from patch_training.blackbox import _mac_payload
    from service.registry.signing import sign

    mac = sign(SIGNING_KEY, _mac_payload(where, raw_npy)).encode("ascii")
    await redis_client.set(where, MAGIC + mac + b"\n" + raw_npy)
