"""Application factory: settings → Redis → registry → upstreams → hot-loader → data plane → app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from patch_training.calibration import CalibrationStore
from patch_training.jobs.queue import sync_redis
from service.api import (
    errors,
    routes_admin,
    routes_feedback,
    routes_predict,
    routes_training,
    routes_v2,
)
from service.dataplane import Dataplane, blocking_runner
from service.metrics import GatewayMetrics
from service.monitoring.monitor import BiasMonitor
from service.monitoring.store import ServedDecisionStore
from service.registry.store import Registry
from service.runtime.hotload import StackWatcher
from service.settings import GatewaySettings, ModelConfig
from service.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> FastAPI:
    """Build the gateway; everything stateful is created in the lifespan, not at import."""
    metrics = metrics or GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running_gateway(app, settings, metrics):
            yield

    app = FastAPI(
        title="Eraser Gateway",
        version="0.1.0",
        description="Inference-time debiasing in front of an unmodified black-box model.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    app.include_router(routes_predict.router)
    app.include_router(routes_v2.health)
    app.include_router(routes_v2.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_feedback.router)
    app.include_router(routes_training.router)
    app.add_api_route("/metrics", _metrics_endpoint, methods=["GET"], include_in_schema=False)
    return app


def app_from_environment() -> FastAPI:
    """The factory ``eraser serve`` hands to uvicorn, so that every worker builds its own app."""
    return create_app(GatewaySettings())


async def _metrics_endpoint(request: Request) -> Response:
    metrics: GatewayMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def _running_gateway(
    app: FastAPI, settings: GatewaySettings, metrics: GatewayMetrics
) -> AsyncIterator[None]:
    redis = aioredis.Redis.from_url(
        settings.redis.url,
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.connect_timeout_s,
    )
    registry = Registry(
        redis, settings.signing_key.get_secret_value().encode(), prefix=settings.redis.key_prefix
    )
    executor = ThreadPoolExecutor(settings.runtime.inference_threads, thread_name_prefix="patch")
    upstreams = {m.name: _upstream(m, metrics) for m in settings.models}
    for client in upstreams.values():
        await client.start()
    watcher = StackWatcher(
        registry, settings.models, settings.runtime, metrics, blocking_runner(executor)
    )
    plane = Dataplane(settings, upstreams, watcher, metrics, executor)
    app.state.registry, app.state.dataplane = registry, plane
    store = ServedDecisionStore(redis, settings.redis.key_prefix, settings.feedback)
    app.state.bias_monitor = BiasMonitor(settings.models, metrics.bias, store)
    app.state.calibrations = CalibrationStore(redis, settings.redis.key_prefix)
    app.state.sync_redis = sync_redis(settings)  # RQ is synchronous; used from a thread pool
    try:
        await watcher.start()
        log.info("gateway ready for models %s", [m.name for m in settings.models])
        yield
    finally:
        await watcher.stop()
        for client in upstreams.values():
            await client.close()
        executor.shutdown(wait=False, cancel_futures=True)
        app.state.sync_redis.close()
        await redis.aclose()


def _upstream(model: ModelConfig, metrics: GatewayMetrics) -> UpstreamClient:
    """The upstream client, with its retries/errors counted and its breaker state exported."""

    def on_event(kind: str) -> None:
        metrics.upstream_events.labels(model.name, kind).inc()

    client = UpstreamClient(model, on_event=on_event)
    metrics.breaker_open.labels(model.name).set_function(
        lambda: float(client.breaker_state == "open")
    )
    return client
