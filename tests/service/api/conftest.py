"""Gateway fixtures: the stand-in black box on a real loopback port → settings → app → client.

The chain follows the app's own: settings (own Redis prefix) → app with lifespan running →
``httpx.AsyncClient`` over ASGI. The upstream is always a real HTTP server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import redis
import yaml
from fastapi import FastAPI, Request, Response

from bench.onnx_patches import mlp_to_onnx
from blackbox.data import FEATURE_NAMES
from blackbox.model import CLASSES
from deploy.local.processes import standin_model_config
from service.api.app import create_app
from service.metrics import GatewayMetrics
from service.settings import GatewaySettings
from tests.conftest import REDIS_URL, SIGNING_KEY
from tests.servers import running_server

PREDICT_KEY = "predict-key-for-tests"
ADMIN_KEY = "admin-key-for-tests"
PREDICT = {"Authorization": f"Bearer {PREDICT_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MODEL = "compas"
OIP_DATATYPES = {  # every numeric OIP datatype and the NumPy type a client sends it from
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def model_config(upstream_url: str, **upstream: object) -> dict:
    """The stand-in's gateway entry (as the demo uses), with upstream settings overridden."""
    config = standin_model_config(upstream_url, name=MODEL)
    config["upstream"] |= {"breaker_reset_s": 0.5, **upstream}
    return config


def make_settings(key_prefix: str, upstream_url: str, **upstream: object) -> GatewaySettings:
    return GatewaySettings(
        models=[model_config(upstream_url, **upstream)],
        redis={"url": REDIS_URL, "key_prefix": key_prefix},
        runtime={"use_gpu": False, "poll_interval_s": 0.2},
        signing_key=SIGNING_KEY.decode(),
        predict_api_key=PREDICT_KEY,
        admin_api_key=ADMIN_KEY,
    )


@pytest.fixture
def settings(key_prefix: str, blackbox_url: str, redis_client: object) -> GatewaySettings:
    # redis_client is requested so the prefix is cleaned after the test.
    return make_settings(key_prefix, blackbox_url)


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


@pytest.fixture
async def app(settings: GatewaySettings, metrics: GatewayMetrics) -> AsyncIterator[FastAPI]:
    app = create_app(settings, metrics)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c


@asynccontextmanager
async def asgi_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan running and a client that calls it over ASGI (for a test whose
    gateway needs settings of its own)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            yield c


@contextmanager
def own_prefix() -> Iterator[str]:
    """A fresh Redis key prefix for a gateway started outside the ``redis_client`` fixture (a
    module-scoped server, a process); its keys are deleted afterwards."""
    prefix = f"eraser-test-{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
            if keys:
                client.delete(*keys)


def serve_env(settings: GatewaySettings, config: Path) -> dict[str, str]:
    """The environment ``eraser-gateway serve`` takes ``settings`` from: its models written to
    ``config`` (a YAML file), its Redis prefix, keys and signing key, CPU inference."""
    config.write_text(
        yaml.safe_dump({"models": [m.model_dump(mode="json") for m in settings.models]})
    )
    return {
        "ERASER_CONFIG_FILE": str(config),
        "ERASER_REDIS__URL": REDIS_URL,
        "ERASER_REDIS__KEY_PREFIX": settings.redis.key_prefix,
        "ERASER_SIGNING_KEY": SIGNING_KEY.decode(),
        "ERASER_PREDICT_API_KEY": PREDICT_KEY,
        "ERASER_ADMIN_API_KEY": ADMIN_KEY,
        "ERASER_RUNTIME__USE_GPU": "false",
    }


def random_patch(seed: int, n_features: int = len(FEATURE_NAMES), k: int = 2) -> bytes:
    """A small random MLP patch: distinct seeds give distinct, checkable log_bias outputs."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((n_features, 8)), rng.standard_normal((8, k))]
    biases = [rng.standard_normal(8), rng.standard_normal(k)]
    return mlp_to_onnx(weights, biases, mean=None, std=None)


def patch_manifest(**overrides: object) -> dict:
    return {
        "kind": "custom",
        "model": MODEL,
        "classes": list(CLASSES),
        "input_shape": [len(FEATURE_NAMES)],
        **overrides,
    }


async def register_patch(client: httpx.AsyncClient, name: str, blob: bytes, **manifest: object):
    import orjson

    return await client.post(
        f"/patches/{name}/versions",
        headers=ADMIN,
        data={"manifest": orjson.dumps(patch_manifest(**manifest)).decode()},
        files={"artifact": ("patch.onnx", blob, "application/octet-stream")},
    )


async def activate(
    client: httpx.AsyncClient, entries: list[dict], expected_revision: int
) -> httpx.Response:
    return await client.put(
        f"/models/{MODEL}/stack",
        headers=ADMIN,
        json={"entries": entries, "expected_revision": expected_revision},
    )


@dataclass
class RecordingUpstream:
    """An OIP v2 upstream for ``compas`` that answers FP64 logits (row sum / 100 and its
    negative) and records the headers of every request it gets."""

    url: str
    headers: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="session")
def recording_upstream() -> Iterator[RecordingUpstream]:
    app = FastAPI()
    recorder = RecordingUpstream("")

    @app.post(f"/v2/models/{MODEL}/infer")
    async def infer(request: Request) -> Response:
        recorder.headers.append(dict(request.headers))
        doc = orjson.loads(await request.body())
        x = np.asarray(doc["inputs"][0]["data"]).reshape(-1, len(FEATURE_NAMES))
        logits = np.stack([x.sum(axis=1) / 100, -x.sum(axis=1) / 100], axis=1)
        out = {"name": "logits", "shape": list(logits.shape), "datatype": "FP64"}
        out["data"] = logits.reshape(-1).tolist()
        return Response(orjson.dumps({"outputs": [out]}), media_type="application/json")

    with running_server(app) as url:
        recorder.url = url
        yield recorder


@pytest.fixture
async def recording_client(
    key_prefix: str, redis_client: object, recording_upstream: RecordingUpstream
) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway in front of ``recording_upstream`` (FP64 answers, declared as the model's
    ``upstream.output_datatype``; every request's headers recorded)."""
    settings = make_settings(key_prefix, recording_upstream.url, output_datatype="FP64")
    async with asgi_client(create_app(settings)) as c:
        yield c
