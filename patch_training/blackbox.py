"""Ask the black box about a calibration set, through the gateway's own upstream adapter.

Training and serving must see the same numbers: the same codec, the same normalisation to
log-probabilities, the same retries and circuit breaker. Answers are cached in Redis under a
hash of the request (endpoint, protocol, output reading, class order and the exact input bytes),
so re-running a job — after a failed export, with other hyper-parameters, by a retried worker —
does not query the black box again.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import numpy as np
import redis.asyncio as aioredis

from service.registry.keys import RegistryKeys
from service.settings import ModelConfig
from service.upstream.client import UpstreamClient


class OutputCache:
    """Black-box log-probabilities by content hash, expiring after ``ttl_s``."""

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self._redis, self._keys, self._ttl_s = redis, RegistryKeys(prefix), ttl_s

    @staticmethod
    def key_for(model: ModelConfig, x: np.ndarray) -> str:
        """Everything that changes the answer is in the hash; the model's name is not."""
        up = model.upstream
        h = hashlib.sha256()
        for part in (up.url, up.protocol, up.output_kind, up.input_name, up.output_name):
            h.update(f"{part}\x00".encode())
        h.update("\x00".join(model.classes).encode())
        x = np.ascontiguousarray(x, dtype=np.float32)
        h.update(f"{x.shape}".encode())
        h.update(x.tobytes())
        return h.hexdigest()

    async def get(self, key: str) -> np.ndarray | None:
        raw = await self._redis.get(self._keys.blackbox_cache(key))
        return None if raw is None else np.load(io.BytesIO(raw), allow_pickle=False)

    async def put(self, key: str, log_p: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(log_p, dtype=np.float64), allow_pickle=False)
        await self._redis.set(self._keys.blackbox_cache(key), buf.getvalue(), ex=self._ttl_s)


async def query_log_probs(
    model: ModelConfig,
    x: np.ndarray,
    cache: OutputCache | None = None,
    batch_size: int = 256,
    concurrency: int = 4,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, bool]:
    """Black-box log-probabilities [N, K] for ``x`` and whether they came from the cache."""
    key = OutputCache.key_for(model, x)
    if cache is not None and (hit := await cache.get(key)) is not None and len(hit) == len(x):
        if progress is not None:
            progress(len(x))
        return hit, True
    async with UpstreamClient(model) as upstream:
        log_p = await upstream.predict_many(x, batch_size, concurrency, progress)
    if cache is not None:
        await cache.put(key, log_p)
    return log_p, False
