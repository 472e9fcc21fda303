"""What a patch the gate rejected would have done on the test split, had it been served.

Why: a gate makes two kinds of error — validating a patch that does not hold (false
validations) and rejecting one that would have (missed effects) — and the second is invisible
from the gateway, which keeps serving the raw model after a rejection. So the rejected version
is run here the way the gateway would run it: its signed blob read back from the registry, the
graph through the gateway's own ``PatchSession``, Eq. 19 through ``service.eraser_math``, on the
raw probabilities the gateway returned for the test split. A job with several bias columns is
replayed as the stack it would have activated (Eq. 21): every patch at its own α.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
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
    return candidate_stack_probs([patch], model, x, raw_probs, prefix)


def candidate_stack_probs(
    patches: Sequence[dict[str, Any]],
    model: ModelConfig,
    x: np.ndarray,
    raw_probs: np.ndarray,
    prefix: str,
    settings: GatewaySettings | None = None,
) -> np.ndarray:
    """Fair log-probabilities of all the job's patches stacked, each at its α, whatever the
    gate said of each (``patches``: the job result's entries, with name, version and α)."""
    if not patches:
        raise ValueError("a stack to replay needs at least one patch")
    settings = settings or GatewaySettings()
    refs = [(str(p["name"]), int(p["version"])) for p in patches]
    blobs = asyncio.run(_blobs(refs, prefix, settings))
    rows = np.asarray(x, dtype=np.float32)
    log_gs = [served_log_bias(blob, rows, model) for blob in blobs]
    log_p = to_log_probs(np.asarray(raw_probs, dtype=np.float64), OutputKind.PROBABILITIES)
    return fair_log_probs(log_p, log_gs, [float(p["alpha"]) for p in patches])


async def _blobs(
    refs: Sequence[tuple[str, int]], prefix: str, settings: GatewaySettings
) -> list[bytes]:
    """Each version's blob, through the registry's signature and hash checks."""
    redis = aioredis.from_url(settings.redis.url, decode_responses=False)
    try:
        registry = Registry(redis, settings.signing_key.get_secret_value().encode(), prefix)
        return [
            await registry.get_blob(await registry.get_manifest(name, version))
            for name, version in refs
        ]
    finally:
        await redis.aclose()
