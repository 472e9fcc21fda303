"""Counterfactual bias audits over HTTP: ``POST /audits`` validates before it stores or
queues anything, ``GET /audits`` lists, and (slow) a real ``eraser worker`` runs one."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis
from rq import Queue
from rq.serializers import JSONSerializer

from blackbox.data import RACE_FEATURE, compas_calibration_csv, load_compas, with_race_feature
from deploy.local.processes import standin_model_config
from service.api.app import create_app
from service.jobs.queue import sync_redis
from service.metrics import GatewayMetrics
from service.settings import GatewaySettings, ModelConfig
from tests.service.api.conftest import ADMIN, MODEL, make_settings
from tests.workers import remove_queue, running_worker, with_own_queue

DATA = with_race_feature(load_compas())
CSV = compas_calibration_csv(DATA, np.arange(300))  # features (race among them), target, race
NO_UPSTREAM = "http://127.0.0.1:9"  # validation never calls the black box


def gateway_settings(key_prefix: str, upstream: str) -> GatewaySettings:
    settings = with_own_queue(make_settings(key_prefix, upstream))
    model = standin_model_config(upstream, MODEL, DATA.feature_names)
    settings.models[0] = ModelConfig.model_validate(model)
    return settings


@pytest.fixture
def settings(key_prefix: str, redis_client: object) -> Iterator[GatewaySettings]:
    settings = gateway_settings(key_prefix, NO_UPSTREAM)
    yield settings
    remove_queue(settings)


@pytest.fixture
async def client(settings: GatewaySettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, GatewayMetrics())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            yield c


def npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


async def submit(
    client: httpx.AsyncClient,
    spec: dict,
    data: bytes = CSV,
    pairs: bytes | None = None,
    headers: dict | None = None,
) -> httpx.Response:
    files = {"data": ("rows.csv", data, "text/csv")}
    if pairs is not None:
        files["pairs"] = ("pairs.npz", pairs, "application/octet-stream")
    return await client.post(
        "/audits",
        headers=ADMIN if headers is None else headers,
        data={"spec": orjson.dumps({"model": MODEL} | spec).decode()},
        files=files,
    )


async def stored_keys(redis_client: aioredis.Redis, key_prefix: str) -> list[bytes]:
    return [k async for k in redis_client.scan_iter(match=f"{key_prefix}:audit*")]


def queued(settings: GatewaySettings) -> int:
    with sync_redis(settings) as connection:
        queue = Queue(settings.training.queue, connection=connection, serializer=JSONSerializer)
        return queue.count


X_CF_WRONG = np.zeros((300, 5), dtype=np.float32)


@pytest.mark.parametrize(
    ("spec", "pairs", "status", "named"),
    [
        ({"attributes": ["race"]}, None, 422, "'race' is not an input column"),
        ({"attributes": [RACE_FEATURE], "values": {RACE_FEATURE: [1, 2]}}, None, 422, "row"),
        ({"attributes": ["race"]}, npz(x_cf=X_CF_WRONG), 422, "'x_cf' has shape [300, 5]"),
        ({"attributes": ["race"]}, npz(x_cf=np.zeros((7, 8))), 422, "has 7 rows"),
        ({"attributes": [RACE_FEATURE]}, npz(x_cf=np.zeros((300, 8))), 422, "every attribute"),
        ({"attributes": ["age"]}, None, 422, "'age' takes"),  # too many distinct values
        ({"model": "nope", "attributes": [RACE_FEATURE]}, None, 404, "'nope'"),
        ({"attributes": [RACE_FEATURE], "data_id": "0" * 64}, None, 422, "spec.data_id"),
    ],
    ids=[
        "not-an-input-no-pairs",
        "unknown-value",
        "pairs-shape",
        "pairs-rows",
        "pairs-unused",
        "too-many-values",
        "unknown-model",
        "set-by-gateway",
    ],
)
async def test_bad_input_is_a_4xx_that_names_it_and_stores_nothing(
    client: httpx.AsyncClient,
    settings: GatewaySettings,
    redis_client: aioredis.Redis,
    key_prefix: str,
    spec: dict,
    pairs: bytes | None,
    status: int,
    named: str,
) -> None:
    r = await submit(client, spec, pairs=pairs)
    assert r.status_code == status, r.text
    assert named in r.json()["error"]["message"]
    assert await stored_keys(redis_client, key_prefix) == []
    assert queued(settings) == 0


async def test_the_admin_key_is_checked_before_the_body(
    client: httpx.AsyncClient, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    r = await submit(client, {"attributes": [RACE_FEATURE]}, headers={})
    assert r.status_code == 401
    bad = {"Authorization": "Bearer not-the-key"}
    assert (await submit(client, {"attributes": [RACE_FEATURE]}, headers=bad)).status_code == 403
    assert (await client.get("/audits")).status_code == 401
    assert await stored_keys(redis_client, key_prefix) == []


async def test_accepted_audits_are_queued_and_listed_newest_first(
    client: httpx.AsyncClient, settings: GatewaySettings
) -> None:
    first = await submit(client, {"attributes": [RACE_FEATURE, "sex"]})
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["rows"] == 300
    assert body["attributes"] == {RACE_FEATURE: "input_column", "sex": "input_column"}
    assert first.headers["location"] == body["status_url"]
    pairs = npz(x_cf=DATA.X[:300] * 1.0)  # any counterfactual of the right shape
    second = (await submit(client, {"attributes": ["race"]}, pairs=pairs)).json()
    assert second["attributes"] == {"race": "pairs"}
    assert queued(settings) == 2
    listing = (await client.get("/audits", headers=ADMIN)).json()
    assert [a["id"] for a in listing] == [second["audit_id"], body["audit_id"]]
    assert all(a["state"] == "queued" and a["ranking"] is None for a in listing)
    view = (await client.get(body["status_url"], headers=ADMIN)).json()
    assert view["state"] == "queued" and view["result"] is None
    race = DATA.X[:300, DATA.feature_names.index(RACE_FEATURE)]
    expected = {"0": int((race == 0).sum()), "1": int((race == 1).sum())}
    assert view["input"]["groups"][RACE_FEATURE] == expected
    assert view["spec"]["data_id"] and view["spec"]["data_filename"] == "rows.csv"
    missing = await client.get("/audits/audit-0000000000000000", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "audit_not_found"
    assert (await client.get("/audits/not-an-id", headers=ADMIN)).status_code == 404
    no_plot = await client.get(f"{body['status_url']}/plot", headers=ADMIN)
    assert no_plot.status_code == 404


@pytest.mark.slow
async def test_a_worker_runs_the_audit_and_the_result_and_plot_are_served(
    key_prefix: str, race_input_blackbox_url: str, redis_client: object, tmp_path: Path
) -> None:
    settings = gateway_settings(key_prefix, race_input_blackbox_url)
    try:
        app = create_app(settings, GatewayMetrics())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                r = await submit(client, {"attributes": [RACE_FEATURE, "sex"], "draws": 300})
                url = r.json()["status_url"]
                with running_worker(settings, tmp_path, burst=True):
                    view = await finished(client, url)
                assert view["state"] == "finished", view["error"]
                result = view["result"]
                assert {a["attribute"] for a in result["ranking"]} == {RACE_FEATURE, "sex"}
                assert result["attributes"][0]["raw"]["bias"]["low"] > 0
                assert view["progress"]["fraction"] == 1.0
                plot = await client.get(view["plot_url"], headers=ADMIN)
                assert plot.headers["content-type"] == "image/png"
                assert plot.content.startswith(b"\x89PNG")
                [line] = (await client.get("/audits", headers=ADMIN)).json()
                assert line["state"] == "finished" and line["ranking"] == result["ranking"]
    finally:
        remove_queue(settings)


async def finished(client: httpx.AsyncClient, url: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        view = (await client.get(url, headers=ADMIN)).json()
        if view["state"] in ("finished", "failed"):
            return view
        await asyncio.sleep(0.2)
    raise TimeoutError(f"audit at {url} did not finish")
