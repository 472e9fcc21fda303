"""What a patch the gate rejected would have done on the test split, had it been served.

Why: a gate makes two kinds of error — validating a patch that does not hold (false
validations) and rejecting one that would have (missed effects) — and the second is invisible
from the gateway, which keeps serving the raw model after a rejection. So the rejected version
is run here the way the gateway would run it: its signed blob read back from the registry, the
graph through the gateway's own ``PatchSession``, Eq. 19 through ``service.eraser_math``, on the
raw probabilities the gateway returned for the test split.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import redis.asyncio as aioredis

from patch_training.evidence import served_log_bias
from service.eraser_math import fair_log_probs, to_log_probs
from service.registry.store import Registry
from service.settings import GatewaySettings, ModelConfig, OutputKind


def candidate_probs(
    patch: dict[str, Any], model: ModelConfig, x: np.ndarray, raw_probs: np.ndarray, prefix: str
) -> np.ndarray:
    """Fair log-probabilities of the job's patch at the job's α on ``x`` (argmax = decision)."""
    blob = asyncio.run(_blob(patch["name"], int(patch["version"]), prefix))
    log_g = served_log_bias(blob, np.asarray(x, dtype=np.float32), model)
    log_p = to_log_probs(np.asarray(raw_probs, dtype=np.float64), OutputKind.PROBABILITIES)
    return fair_log_probs(log_p, [log_g], [float(patch["alpha"])])


async def _blob(name: str, version: int, prefix: str) -> bytes:
    settings = GatewaySettings()
    redis = aioredis.from_url(settings.redis.url, decode_responses=False)
    try:
        registry = Registry(redis, settings.signing_key.get_secret_value().encode(), prefix)
        return await registry.get_blob(await registry.get_manifest(name, version))
    finally:
        await redis.aclose()
