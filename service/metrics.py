"""Prometheus metrics for the gateway, on a registry passed in (tests read it directly).

Few labels, ``_seconds`` units; the request path is instrumented once, in ``Dataplane``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class GatewayMetrics:
    """Every metric the gateway exports; one instance per app."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "eraser_requests",
            "Prediction requests by route and outcome",
            ["model", "route", "outcome"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "eraser_stage_duration_seconds",
            "Latency by stage: upstream, patch, total",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "eraser_batch_size",
            "Instances per request",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.coalesced_requests = Histogram(
            "eraser_coalesced_requests",
            "Requests sharing one upstream call (dynamic batching)",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.upstream_events = Counter(
            "eraser_upstream_events",
            "Upstream retries, errors by kind, breaker openings",
            ["model", "event"],
            registry=r,
        )
        self.hotloads = Counter(
            "eraser_hotload", "Stack hot-loads by outcome", ["model", "outcome"], registry=r
        )
        self.active_revision = Gauge(
            "eraser_active_revision", "Stack revision this replica serves", ["model"], registry=r
        )
        self.breaker_open = Gauge(
            "eraser_upstream_breaker_open",
            "1 while the upstream circuit is open",
            ["model"],
            registry=r,
        )
