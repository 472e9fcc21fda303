"""What a running job needs from the outside world, opened and closed in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis

from patch_training.blackbox import OutputCache
from patch_training.jobs.progress import JobProgress
from service.calibration.store import CalibrationStore
from service.errors import ModelNotFound
from service.jobs.audits import AuditStore
from service.registry.store import Registry
from service.settings import GatewaySettings, ModelConfig


@dataclass(frozen=True)
class JobContext:
    settings: GatewaySettings
    registry: Registry
    calibrations: CalibrationStore
    cache: OutputCache
    progress: JobProgress
    job_id: str | None = None  # makes registration idempotent across retries of one job
    audits: AuditStore | None = None  # counterfactual audit records (``patch_training.audit``)

    def model(self, name: str) -> ModelConfig:
        """The model as this process's settings describe it (the gateway's own table)."""
        model = self.settings.model(name)
        if model is None:
            known = [m.name for m in self.settings.models]
            raise ModelNotFound(f"model {name!r} is not configured here (known: {known})")
        return model


@asynccontextmanager
async def open_context(
    settings: GatewaySettings, progress: JobProgress, job_id: str | None = None
) -> AsyncIterator[JobContext]:
    """Redis-backed registry, calibration store and output cache on one connection pool; the
    registry and the cache authenticate what they read with the same shared signing key."""
    redis = aioredis.Redis.from_url(
        settings.redis.url,
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.connect_timeout_s,
    )
    prefix = settings.redis.key_prefix
    signing_key = settings.signing_key.get_secret_value().encode()
    try:
        yield JobContext(
            settings=settings,
            registry=Registry(redis, signing_key, prefix, settings.runtime.max_alpha),
            calibrations=CalibrationStore(redis, prefix),
            cache=OutputCache(redis, prefix, settings.training.cache_ttl_s, signing_key),
            progress=progress,
            job_id=job_id,
            audits=AuditStore(redis, prefix, settings.training.result_ttl_s),
        )
    finally:
        await redis.aclose()
