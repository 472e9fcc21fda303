"""Application factory: settings → Redis → registry → upstreams → hot-loader → data plane → app
(and, with ``grpc.port``, the OIP v2 gRPC service on the same loop and data plane).

Everything stateful is built in the lifespan, in one place (``_running_gateway``), and handed
to routes as typed dependencies (``service.api.deps``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager

import redis.asyncio as aioredis
from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service import __version__
from service.api import (
    deps,
    docs,
    errors,
    routes_admin,
    routes_audits,
    routes_feedback,
    routes_predict,
    routes_training,
    routes_v1,
    routes_v2,
)
from service.api.edge import RequestEdge
from service.api.fastlane import FastLane
from service.calibration.checker import UploadChecker
from service.calibration.store import CalibrationStore
from service.dataplane import Dataplane
from service.jobs.audits import AuditStore
from service.jobs.queue import JobQueue
from service.metrics import GatewayMetrics
from service.monitoring.monitor import BiasMonitor
from service.monitoring.store import ServedDecisionStore
from service.registry.store import Registry
from service.runtime.hotload import StackWatcher, blocking_runner
from service.settings import GatewaySettings, ModelConfig
from service.upstream.client import UpstreamClient

log = logging.getLogger(__name__)


# Every router the app mounts, in order (the fast lane's tests compare against the same list).
ROUTERS: tuple[APIRouter, ...] = (
    routes_predict.router,
    routes_v2.health,
    routes_v2.router,
    routes_v1.router,
    routes_admin.router,
    routes_feedback.router,
    routes_training.router,
    routes_audits.router,
)


def create_app(settings: GatewaySettings, metrics: GatewayMetrics | None = None) -> FastAPI:
    """Build the gateway; everything stateful is created in the lifespan, not at import."""
    metrics = metrics or GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with _running_gateway(settings, metrics) as gateway:
            deps.install(app, gateway)
            if settings.grpc.port is None:
                yield
                return
            # The OIP v2 gRPC service, on this loop, in front of the same data plane (imported
            # here: grpc and the generated code cost ~0.1 s of start-up to gateways without it).
            from service.api import grpc_v2

            async with grpc_v2.serving(settings, gateway.dataplane) as port:
                app.state.grpc_port = port
                yield

    app = FastAPI(
        title="Eraser Gateway",
        version=__version__,
        description="Inference-time debiasing in front of an unmodified black-box model.",
        lifespan=lifespan,
        docs_url=None,  # served from packaged assets, not a CDN (service.api.docs)
        redoc_url=None,
        # FastAPI's native OpenTelemetry looks up the global providers (environment variables
        # included) on every request; the gateway exports Prometheus metrics and forwards
        # traceparent instead, so the lookups were pure per-request cost (docs/operations.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    errors.install(app)
    docs.install(app)
    app.add_middleware(FastLane)  # inside the edge: ids and body limits apply to it too
    app.add_middleware(RequestEdge, settings=settings)
    for router in ROUTERS:
        app.include_router(router)
    app.add_api_route("/metrics", _metrics_endpoint, methods=["GET"], include_in_schema=False)
    return app


def app_from_environment() -> FastAPI:
    """The factory ``eraser-gateway serve`` hands to uvicorn: every worker builds its own app."""
    return create_app(GatewaySettings())


async def _metrics_endpoint(request: Request) -> Response:
    metrics: GatewayMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


@asynccontextmanager
async def _running_gateway(
    settings: GatewaySettings, metrics: GatewayMetrics
) -> AsyncIterator[deps.Gateway]:
    """Open everything, in order, and close it in reverse, whatever fails on the way."""
    async with AsyncExitStack() as stack:
        redis = aioredis.Redis.from_url(
            settings.redis.url,
            socket_timeout=settings.redis.socket_timeout_s,
            socket_connect_timeout=settings.redis.connect_timeout_s,
        )
        stack.push_async_callback(redis.aclose)
        signing_key = settings.signing_key.get_secret_value().encode()
        registry = Registry(
            redis,
            signing_key,
            prefix=settings.redis.key_prefix,
            max_alpha=settings.runtime.max_alpha,
        )
        inference = ThreadPoolExecutor(settings.runtime.inference_threads, "patch")
        loading = ThreadPoolExecutor(1, "patch-loader")  # builds + warm-ups, never on `inference`
        for pool in (inference, loading):
            stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        upstreams = {m.name: _upstream(m, metrics) for m in settings.models}
        for client in upstreams.values():
            stack.push_async_callback(client.close)
            await client.start()
        load_blocking = blocking_runner(loading)
        watcher = StackWatcher(registry, settings.models, settings.runtime, metrics, load_blocking)
        store = ServedDecisionStore(redis, settings.redis.key_prefix, settings.feedback)
        monitor = BiasMonitor(settings.models, metrics.bias, store)
        plane = Dataplane(settings, upstreams, watcher, metrics, inference, monitor)
        uploads = UploadChecker()
        stack.callback(uploads.close)
        jobs = JobQueue(settings)  # RQ is synchronous; its calls run in a worker thread
        stack.callback(jobs.close)
        stack.push_async_callback(watcher.stop)
        await watcher.start()
        log.info("gateway ready for models %s", [m.name for m in settings.models])
        yield deps.Gateway(
            settings=settings,
            registry=registry,
            dataplane=plane,
            watcher=watcher,
            monitor=monitor,
            calibrations=CalibrationStore(redis, settings.redis.key_prefix),
            uploads=uploads,
            jobs=jobs,
            audits=AuditStore(redis, settings.redis.key_prefix, settings.training.result_ttl_s),
            load_blocking=load_blocking,
        )


def _upstream(model: ModelConfig, metrics: GatewayMetrics) -> UpstreamClient:
    """The upstream client, with its retries/errors counted and its breaker state exported."""

    def on_event(kind: str) -> None:
        metrics.upstream_events.labels(model.name, kind).inc()

    client = UpstreamClient(model, on_event=on_event)
    metrics.breaker_open.labels(model.name).set_function(
        lambda: float(client.breaker_state == "open")
    )
    return client
