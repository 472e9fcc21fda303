"""The upstream call and the patch inference overlap, whether the patch runs inline or pooled.

Not a speed test: with an upstream that takes L and a patch that takes P (measured here), a
sequential gateway needs at least L + P; an overlapping one needs about max(L, P). The bound
below sits halfway, so machine noise of tens of milliseconds does not decide the outcome.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from bench.heavy_patch import heavy_patch
from blackbox.model import MlpWeights
from blackbox.server import create_app as create_blackbox
from service.api.app import create_app
from service.metrics import GatewayMetrics
from tests.servers import running_server
from tests.service.api.conftest import MODEL, PREDICT, activate, make_settings, register_patch

UPSTREAM_S = 0.3
ROWS = np.ones((64, 7), dtype=np.float32)


def patch_seconds(blob: bytes) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(blob, opts, providers=["CPUExecutionProvider"])
    session.run(None, {"x": ROWS})
    start = time.perf_counter()
    session.run(None, {"x": ROWS})
    return time.perf_counter() - start


@pytest.mark.parametrize("inline_max_ms", [0.0, 10_000.0], ids=["thread-pool", "inline"])
async def test_upstream_and_patch_overlap(
    key_prefix: str, redis_client: object, blackbox_model: MlpWeights, inline_max_ms: float
) -> None:
    blob = heavy_patch(7, 2, width=512, depth=400)
    patch_s = patch_seconds(blob)
    slow = create_blackbox(blackbox_model, name=MODEL, delay_ms=UPSTREAM_S * 1e3)
    with running_server(slow) as upstream_url:  # its own thread and event loop
        settings = make_settings(key_prefix, upstream_url, read_timeout_s=10)
        settings.runtime.inline_patch_max_ms = inline_max_ms
        app = create_app(settings, GatewayMetrics())
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client,
        ):
            await register_patch(client, "heavy", blob)
            await activate(client, [{"patch": "heavy", "version": 1}], 0)
            body = {"model": MODEL, "instances": ROWS.tolist()}
            await client.post("/predict", headers=PREDICT, json=body)  # warm the pool
            start = time.perf_counter()
            r = await client.post("/predict", headers=PREDICT, json=body)
            elapsed = time.perf_counter() - start
    assert r.status_code == 200 and r.json()["debiased"], r.text
    assert elapsed < UPSTREAM_S + patch_s / 2, (elapsed, patch_s)
