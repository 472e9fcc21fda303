"""The offline replay of a job's patches reads their signed blobs from a real Redis registry
and computes what the gateway's Eq. 21 would serve for the stack."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from bench.onnx_patches import mlp_to_onnx
from bench.quality.candidate import candidate_stack_probs
from service.eraser_math import fair_log_probs, log_softmax
from service.registry.models import REJECTED, VersionStatus
from service.registry.store import Registry
from service.settings import GatewaySettings, ModelConfig
from tests.conftest import REDIS_URL, SIGNING_KEY
from tests.service.registry.conftest import make_spec

FEATURES = 7
MODEL = ModelConfig.model_validate(
    {
        "name": "credit",
        "classes": ["deny", "approve"],
        "input": {"shape": [FEATURES]},
        "upstream": {"url": "http://127.0.0.1:9/v2/models/credit/infer", "protocol": "v2"},
    }
)


def _linear_patch(seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.7, (FEATURES, 2)).astype(np.float32)
    b = rng.normal(0, 0.2, 2).astype(np.float32)
    return mlp_to_onnx([w], [b], None, None), w, b


async def _register(prefix: str, blobs: list[bytes]) -> list[int]:
    redis = aioredis.from_url(REDIS_URL)
    registry = Registry(redis, SIGNING_KEY, prefix=prefix)
    rejected = VersionStatus(status=REJECTED, reason="replayed although the gate said no")
    versions = [
        (await registry.register_version(f"p{i}", make_spec(), blob, status=rejected)).version
        for i, blob in enumerate(blobs)
    ]
    await redis.aclose()
    return versions


async def _clean(prefix: str) -> None:
    redis = aioredis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"eraser-test-{uuid.uuid4().hex[:10]}"
    yield name
    asyncio.run(_clean(name))


def test_a_rejected_stack_is_replayed_as_eq_21_with_each_alpha(prefix: str) -> None:
    (blob0, w0, b0), (blob1, w1, b1) = _linear_patch(0), _linear_patch(1)
    versions = asyncio.run(_register(prefix, [blob0, blob1]))
    patches = [
        {"name": f"p{i}", "version": v, "alpha": a}
        for i, (v, a) in enumerate(zip(versions, (0.5, 1.25), strict=True))
    ]
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, FEATURES)).astype(np.float32)
    raw = np.exp(log_softmax(rng.normal(size=(40, 2))))
    settings = GatewaySettings(signing_key=SIGNING_KEY.decode())
    got = candidate_stack_probs(patches, MODEL, x, raw, prefix, settings)
    log_g = [log_softmax(x.astype(np.float64) @ w + b) for w, b in ((w0, b0), (w1, b1))]
    expected = fair_log_probs(np.log(raw), log_g, [0.5, 1.25])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    single = candidate_stack_probs(patches[:1], MODEL, x, raw, prefix, settings)
    assert not np.allclose(single, got, atol=1e-3)  # the second patch changes the answer


def test_a_blob_signed_with_another_key_is_refused(prefix: str) -> None:
    versions = asyncio.run(_register(prefix, [_linear_patch(0)[0]]))
    patch = {"name": "p0", "version": versions[0], "alpha": 1.0}
    other = GatewaySettings(signing_key="not-the-key-that-signed-it")
    x, raw = np.zeros((2, FEATURES), np.float32), np.full((2, 2), 0.5)
    with pytest.raises(Exception, match="signature"):
        candidate_stack_probs([patch], MODEL, x, raw, prefix, other)
    with pytest.raises(ValueError, match="at least one"):
        candidate_stack_probs([], MODEL, x, raw, prefix)
