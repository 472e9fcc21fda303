"""The transport-agnostic data plane: the native and the OIP v2 routes both call ``predict``.

It asks the upstream and runs the patch stack *concurrently*, then combines them with the Eraser
math; concurrent requests are coalesced into shared upstream calls (``service.batching``). Bias
monitoring of a request that reports protected attributes happens here too, so both routes
share one prediction path. The whole request path is instrumented here, once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from service import eraser_math
from service.batching import MicroBatcher
from service.errors import EraserError, ModelNotFound, PatchFailed
from service.metrics import GatewayMetrics
from service.monitoring.monitor import BiasMonitor
from service.runtime.hotload import StackWatcher
from service.runtime.stack import LoadedPatch, LoadedStack
from service.settings import GatewaySettings, ModelConfig
from service.upstream.client import UpstreamClient

T = TypeVar("T")
Upstream = tuple[np.ndarray, str | None]  # log-probabilities and the upstream's datatype


@dataclass(frozen=True)
class Prediction:
    """Raw and fair log-probabilities for one batch, and the stack that produced them."""

    model: ModelConfig
    stack: LoadedStack
    raw_log_probs: np.ndarray
    fair_log_probs: np.ndarray
    debiased: bool
    output_datatype: str | None = None  # the OIP datatype of the upstream's scores, if it said

    def rows(self, start: int, stop: int) -> Prediction:
        """One request's share of a batched prediction."""
        return Prediction(
            self.model,
            self.stack,
            self.raw_log_probs[start:stop],
            self.fair_log_probs[start:stop],
            self.debiased,
            self.output_datatype,
        )


@dataclass(frozen=True)
class Served:
    """A request's prediction and, when it reported protected attributes, its feedback id."""

    prediction: Prediction
    request_id: str | None = None


class Dataplane:
    def __init__(
        self,
        settings: GatewaySettings,
        upstreams: dict[str, UpstreamClient],
        watcher: StackWatcher,
        metrics: GatewayMetrics,
        executor: ThreadPoolExecutor,
        monitor: BiasMonitor,
    ) -> None:
        self.settings = settings
        self.upstreams = upstreams
        self.watcher = watcher
        self.metrics = metrics
        self.executor = executor
        self.monitor = monitor
        self.inline_max_ms = settings.runtime.inline_patch_max_ms
        self.batchers = {m.name: self._batcher(m) for m in settings.models}
        self._patch_histograms: dict[tuple[str, str, int], Any] = {}
        # Metric children by labels, made on first use: labels() costs ~1 µs a lookup, and
        # the request path observes four to five series per request.
        self._series: dict[tuple[Any, ...], Any] = {}
        self._patch_hooks = {m.name: partial(self._patch_timed, m.name) for m in settings.models}
        for model in settings.models:
            metrics.init_model(model.name)

    def _batcher(self, model: ModelConfig) -> MicroBatcher[Prediction] | None:
        runtime = self.settings.runtime
        if runtime.batch_max_rows == 0:
            return None
        coalesced = self.metrics.coalesced_requests.labels(model.name)
        return MicroBatcher(
            partial(self._infer, model),
            max_rows=runtime.batch_max_rows,
            max_in_flight=runtime.batch_max_in_flight,
            on_batch=coalesced.observe,
        )

    def model(self, name: str) -> ModelConfig:
        model = self.settings.model(name)
        if model is None:
            known = [m.name for m in self.settings.models]
            raise ModelNotFound(f"unknown model '{name}'", known_models=known)
        return model

    def ready(self, name: str) -> bool:
        return self.watcher.ready(name)

    async def predict(
        self,
        model: ModelConfig,
        x: np.ndarray,
        route: str,
        monitor: list[dict[str, str]] | None = None,
    ) -> Served:
        """Debias ``x``; with ``monitor`` (protected attributes per instance, checked before the
        upstream is called) also count the decisions and store them for feedback."""
        if monitor is None:  # the hot path: no monitoring work at all
            return Served(await self._predict_counted(model, x, route))
        groups = self.monitor.columns(model, monitor, len(x))
        prediction = await self._predict_counted(model, x, route)
        request_id = await self.monitor.observe(
            model, prediction.raw_log_probs, prediction.fair_log_probs, groups
        )
        return Served(prediction, request_id)

    async def _predict_counted(self, model: ModelConfig, x: np.ndarray, route: str) -> Prediction:
        name = model.name
        start = time.perf_counter()
        outcome = "error"
        try:
            prediction = await self._predict(model, x)
            outcome = "debiased" if prediction.debiased else "raw"
            return prediction
        except EraserError as exc:
            outcome = exc.code
            raise
        finally:
            self._stage(name, "total").observe(time.perf_counter() - start)
            self._child(self.metrics.requests, name, route, outcome).inc()
            self._child(self.metrics.batch_size, name).observe(len(x))

    async def _predict(self, model: ModelConfig, x: np.ndarray) -> Prediction:
        stack = self.watcher.current(model.name)  # one reference for the whole request
        batcher = self.batchers[model.name]
        if batcher is None:
            return await self._infer(model, stack, x)
        return await batcher.submit(stack, x)

    async def _infer(self, model: ModelConfig, stack: LoadedStack, x: np.ndarray) -> Prediction:
        """One upstream call and one patch run for ``x``, which may hold several requests."""
        client = self.upstreams[model.name]
        if not stack.debiasing:
            raw, dtype = await self._timed(model.name, "upstream", client.predict_typed(x))
            return Prediction(model, stack, raw, raw, debiased=False, output_datatype=dtype)
        if stack.estimated_seconds(len(x)) * 1e3 <= self.inline_max_ms:
            return await self._infer_inline(model, stack, x)
        return await self._infer_pooled(model, stack, x)

    async def _infer_pooled(
        self, model: ModelConfig, stack: LoadedStack, x: np.ndarray
    ) -> Prediction:
        """A heavy stack runs in the thread pool while this task awaits the upstream.

        The loop is not woken when the patch finishes (a plain ``concurrent.futures`` job, not
        ``run_in_executor``): its result is only needed once the upstream has answered, and
        every wake-up of an idle process costs latency.
        """
        job = self.executor.submit(self._run_stack, model.name, stack, x)
        client = self.upstreams[model.name]
        raw = await self._timed(model.name, "upstream", client.predict_typed(x))
        try:
            log_biases = job.result() if job.done() else await asyncio.wrap_future(job)
        except Exception as exc:
            return self._patch_failed(model, stack, raw, exc)
        return self._combine(model, stack, raw, log_biases)

    async def _infer_inline(
        self, model: ModelConfig, stack: LoadedStack, x: np.ndarray
    ) -> Prediction:
        """A cheap stack runs on the event loop once the upstream request is on the wire: a
        thread hop would cost more than the inference."""
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client = self.upstreams[model.name]
        upstream = asyncio.ensure_future(
            self._timed(model.name, "upstream", client.predict_typed(x, sent=sent))
        )
        upstream.add_done_callback(lambda _: sent.done() or sent.set_result(None))
        try:
            await sent
            log_biases = self._run_stack(model.name, stack, x)
        except asyncio.CancelledError:
            upstream.cancel()
            raise
        except Exception as exc:  # the upstream's own error, if any, takes precedence
            return self._patch_failed(model, stack, await upstream, exc)
        return self._combine(model, stack, await upstream, log_biases)

    def _run_stack(self, name: str, stack: LoadedStack, x: np.ndarray) -> list[np.ndarray]:
        start = time.perf_counter()
        try:
            return stack.run(x, on_patch=self._patch_hooks[name])
        finally:
            self._stage(name, "patch").observe(time.perf_counter() - start)

    def _patch_timed(self, model: str, patch: LoadedPatch, seconds: float) -> None:
        key = (model, patch.manifest.name, patch.manifest.version)
        histogram = self._patch_histograms.get(key)
        if histogram is None:  # labels() costs ~1 µs; a stack has a handful of patches
            histogram = self.metrics.patch_seconds.labels(model, key[1], str(key[2]))
            self._patch_histograms[key] = histogram
        histogram.observe(seconds)

    def _combine(
        self,
        model: ModelConfig,
        stack: LoadedStack,
        upstream: Upstream,
        log_biases: list[np.ndarray],
    ) -> Prediction:
        raw, dtype = upstream
        fair = eraser_math.fair_log_probs(raw, log_biases, stack.alphas)
        self.metrics.corrections.observe(model.name, raw, fair)
        return Prediction(model, stack, raw, fair, debiased=True, output_datatype=dtype)

    def _patch_failed(
        self, model: ModelConfig, stack: LoadedStack, upstream: Upstream, exc: BaseException
    ) -> Prediction:
        """Never a raw output labelled as fair: 503, or raw marked ``debiased=false`` if allowed."""
        if model.on_patch_failure == "raw":
            raw, dtype = upstream
            return Prediction(model, stack, raw, raw, debiased=False, output_datatype=dtype)
        if isinstance(exc, PatchFailed):
            raise exc
        raise PatchFailed(f"patch stack revision {stack.revision} failed: {exc!r}")

    async def _timed(self, model: str, stage: str, awaitable: Any) -> Any:
        start = time.perf_counter()
        try:
            return await awaitable
        finally:
            self._stage(model, stage).observe(time.perf_counter() - start)

    def _stage(self, model: str, stage: str) -> Any:
        return self._child(self.metrics.stage_seconds, model, stage)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set."""
        key = (metric, *labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child
