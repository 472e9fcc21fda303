"""Prometheus metrics for the gateway, on a registry passed in (tests read it directly).

Few labels, ``_seconds`` units; the request path is instrumented once, in ``Dataplane``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.monitoring.bias_metrics import BiasMetrics
from service.monitoring.corrections import CorrectionMetrics

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
        self.registry_behind = Gauge(
            "eraser_registry_behind",
            "1 while the registry's revision is below the one this replica serves (Redis lost "
            "or restored its data); the replica keeps its last verified stack",
            ["model"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "eraser_upstream_breaker_open",
            "1 while the upstream circuit is open",
            ["model"],
            registry=r,
        )
        self.patch_seconds = Histogram(
            "eraser_patch_duration_seconds",
            "Inference latency of each patch version in the serving stack",
            ["model", "patch", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_patch = Gauge(
            "eraser_active_patch_info",
            "1 for each patch version (and alpha) of the stack revision this replica serves",
            ["model", "revision", "patch", "version", "alpha"],
            registry=r,
        )
        self.corrections = CorrectionMetrics(r)
        self.bias = BiasMetrics(r)
        self._active_labels: dict[str, list[tuple[str, ...]]] = {}

    def init_model(self, model: str) -> None:
        """Create a model's known series at zero when the gateway starts: Prometheus' rate() and
        increase() only see changes after a series' first scrape (a first hot-load failure
        would otherwise never raise an alert)."""
        for outcome in ("success", "failure"):
            self.hotloads.labels(model, outcome)
        self.registry_behind.labels(model).set(0)
        self.corrections.init_model(model)

    def set_active_stack(self, model: str, revision: int, patches: list[dict[str, object]]) -> None:
        """Replace the model's ``eraser_active_patch_info`` series with the new stack's."""
        for labels in self._active_labels.pop(model, []):
            self.active_patch.remove(*labels)
        current = [
            (model, str(revision), str(p["name"]), str(p["version"]), str(p["alpha"]))
            for p in patches
        ]
        for labels in current:
            self.active_patch.labels(*labels).set(1)
        self._active_labels[model] = current
        self.active_revision.labels(model).set(revision)
