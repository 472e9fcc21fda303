"""Shared fixtures: a real Redis (own key prefix per test, cleaned afterwards)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

REDIS_URL = os.environ.get("ERASER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SIGNING_KEY = b"test-signing-key"


@pytest.fixture
def key_prefix() -> str:
    return f"eraser-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - environment problem, not a test result
        pytest.fail(f"tests need a Redis server at {REDIS_URL}: {exc}")
    yield client
    keys = [k async for k in client.scan_iter(match=f"{key_prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def pytest_configure(config: pytest.Config) -> None:
    # CI machines are noisy: property tests check correctness, not speed.
    from hypothesis import settings

    settings.register_profile("eraser", deadline=None)
    settings.load_profile("eraser")
