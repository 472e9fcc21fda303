"""Shared fixtures: a real Redis (own key prefix per test, cleaned afterwards)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from blackbox.model import MlpWeights

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


@pytest.fixture(scope="session")
def blackbox_model(tmp_path_factory: pytest.TempPathFactory) -> MlpWeights:
    """The stand-in COMPAS black box's weights (trained once per test session)."""
    from blackbox.server import ensure_model

    return ensure_model(Path(tmp_path_factory.mktemp("blackbox")) / "compas_mlp.npz")


@pytest.fixture(scope="session")
def blackbox_url(blackbox_model: MlpWeights) -> Iterator[str]:
    """The stand-in served over OIP v2 on a loopback port, as model ``compas``."""
    from blackbox.server import create_app
    from tests.servers import running_server

    with running_server(create_app(blackbox_model, name="compas")) as url:
        yield url


@pytest.fixture(scope="session")
def race_input_blackbox_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A stand-in that takes race as an eighth input (the Eraser paper's setting), as ``compas``."""
    from blackbox.server import create_app, ensure_model
    from tests.servers import running_server

    path = Path(tmp_path_factory.mktemp("blackbox-race")) / "compas_mlp_race_input.npz"
    with running_server(create_app(ensure_model(path, race_input=True), name="compas")) as url:
        yield url
