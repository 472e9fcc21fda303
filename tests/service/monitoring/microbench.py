"""Micro-benchmark of bias monitoring's per-request cost (not a test; not part of bench/).

    .venv/bin/python -m tests.service.monitoring.microbench

Prints medians of: counting a monitored request's decisions (argmax + counters, 2 attributes),
storing it for feedback (one Redis round trip on 127.0.0.1), the flip/KL metrics that every
debiased batch pays, and ``/predict`` end to end over a real loopback server with and without a
``monitor`` field.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import timeit
import uuid
from pathlib import Path

import httpx
import numpy as np
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from blackbox.server import create_app as create_blackbox
from blackbox.server import ensure_model
from service.api.app import create_app
from service.eraser_math import log_softmax
from service.metrics import GatewayMetrics
from service.monitoring.attributes import group_columns
from service.monitoring.bias_metrics import BiasMetrics, ModelBiasCounters
from service.monitoring.config import FeedbackSettings
from service.monitoring.monitor import BiasMonitor
from service.monitoring.store import ServedDecisionStore
from service.settings import ModelConfig
from tests.conftest import REDIS_URL
from tests.servers import running_server
from tests.service.api.conftest import PREDICT, model_config
from tests.service.monitoring.conftest import MONITORING, monitored_settings

FAST = {"loop": "uvloop", "http": "httptools"}
ROW = [25, 3, 0, 0, 1, 1, 1]


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} µs"


def per_call(fn, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def monitored_model() -> ModelConfig:
    return ModelConfig.model_validate(
        model_config("http://127.0.0.1:1") | {"monitoring": MONITORING}
    )


def in_process_costs(n: int) -> None:
    """Counting and checking, without the store; and the flip/KL metrics of a debiased batch."""
    model = monitored_model()
    counters = ModelBiasCounters(BiasMetrics(CollectorRegistry()), model)
    metrics = GatewayMetrics()
    rng = np.random.default_rng(0)
    raw = log_softmax(rng.standard_normal((n, 2)))
    fair = log_softmax(rng.standard_normal((n, 2)))
    rows = [{"race": "Caucasian", "sex": "Male"}] * n
    groups = group_columns(model, rows, n)

    def count() -> None:
        raw_labels = np.argmax(raw, axis=1).tolist()
        counters.count_decisions(raw_labels, np.argmax(fair, axis=1).tolist(), groups)

    check = per_call(lambda: group_columns(model, rows, n), 2000)
    counted = per_call(count, 2000)
    corrections = per_call(lambda: metrics.corrections.observe("m", raw, fair), 2000)
    print(
        f"batch {n:>3}: check monitor field {us(check)}   count decisions {us(counted)}   "
        f"flip+KL metrics (every debiased batch) {us(corrections)}"
    )


async def store_round_trip() -> None:
    redis = aioredis.Redis.from_url(REDIS_URL)
    prefix = f"eraser-microbench-{uuid.uuid4().hex[:8]}"
    model = monitored_model()
    store = ServedDecisionStore(redis, prefix, FeedbackSettings())
    monitor = BiasMonitor([model], BiasMetrics(CollectorRegistry()), store)
    raw = log_softmax(np.zeros((1, 2)))
    groups = monitor.columns(model, [{"race": "Caucasian", "sex": "Male"}], 1)
    times = []
    for _ in range(500):
        start = time.perf_counter()
        await monitor.observe(model, raw, raw, groups)
        times.append(time.perf_counter() - start)
    print(f"observe (count + Redis put script), batch 1: median {us(statistics.median(times))}")
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def end_to_end(url: str) -> None:
    plain = {"model": "compas", "instances": [ROW]}
    monitored = plain | {"monitor": [{"race": "Caucasian", "sex": "Male"}]}
    async with httpx.AsyncClient(base_url=url) as client:
        results = {}
        for _ in range(3):  # interleaved rounds, so drift hits both alike
            for name, body in (("without monitor", plain), ("with monitor", monitored)):
                for _ in range(300):
                    start = time.perf_counter()
                    r = await client.post("/predict", headers=PREDICT, json=body)
                    results.setdefault(name, []).append(time.perf_counter() - start)
                    assert r.status_code == 200
        for name, times in results.items():
            print(f"/predict end to end {name:>16}: median {statistics.median(times) * 1e3:.3f} ms")


def main() -> None:
    for n in (1, 32, 256):
        in_process_costs(n)
    asyncio.run(store_round_trip())
    model = ensure_model(Path(".cache/models/compas_mlp.npz"))
    prefix = f"eraser-microbench-{uuid.uuid4().hex[:8]}"
    try:
        with (
            running_server(create_blackbox(model, name="compas"), **FAST) as upstream,
            running_server(create_app(monitored_settings(prefix, upstream)), **FAST) as url,
        ):
            asyncio.run(end_to_end(url))
    finally:
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*"))
            if keys:
                client.delete(*keys)


if __name__ == "__main__":
    main()
