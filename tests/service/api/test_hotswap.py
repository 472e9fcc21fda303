"""Hot-swapping stacks under load: no failed request, no answer mixing two revisions."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import onnxruntime as ort
import redis.asyncio as aioredis
from fastapi import FastAPI

from blackbox.model import CLASSES
from service import eraser_math as em
from service.api.app import create_app
from service.metrics import GatewayMetrics
from service.settings import GatewaySettings
from tests.fixtures_upstream import refused_port
from tests.service.api.conftest import (
    ADMIN,
    MODEL,
    PREDICT,
    activate,
    make_settings,
    random_patch,
    register_patch,
)

ROWS = np.array([[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0], [31, 10, 1, 0, 0, 1, 1]])
N_PATCHES, N_REVISIONS, N_CLIENTS = 4, 24, 8


def expected_fair(body: dict, outputs: dict[int, np.ndarray], stack: list[dict]) -> np.ndarray:
    raw = np.log([[p["raw_probabilities"][c] for c in CLASSES] for p in body["predictions"]])
    log_gs = [outputs[e["version"]] for e in stack]
    return em.softmax_from_log(em.fair_log_probs(raw, log_gs, [e["alpha"] for e in stack]))


async def test_every_response_names_exactly_the_revision_that_produced_it(
    client: httpx.AsyncClient,
) -> None:
    blobs = [random_patch(seed) for seed in range(N_PATCHES)]
    for blob in blobs:
        assert (await register_patch(client, "race", blob)).status_code == 201
    x = ROWS.astype(np.float32)
    outputs = {v + 1: ort.InferenceSession(b).run(None, {"x": x})[0] for v, b in enumerate(blobs)}
    stacks: dict[int, list[dict]] = {0: []}
    responses: list[httpx.Response] = []
    served: set[int] = set()
    done = asyncio.Event()

    async def caller() -> None:
        payload = {"model": MODEL, "instances": ROWS.tolist(), "return_raw": True}
        while not done.is_set():
            r = await client.post("/predict", headers=PREDICT, json=payload)
            responses.append(r)
            served.add(int(r.headers.get("X-Eraser-Revision", -1)))

    async def served_under_load(rev: int) -> None:
        """Move on once some caller got an answer from ``rev``: every revision is exercised."""
        while rev not in served:
            await asyncio.sleep(0.005)

    async def operator() -> None:
        for rev in range(1, N_REVISIONS + 1):
            # Alternate one- and two-patch stacks with a distinct alpha per revision.
            entries = [{"patch": "race", "version": rev % N_PATCHES + 1, "alpha": 0.05 * rev}]
            if rev % 2:
                entries.append(
                    {"patch": "race", "version": (rev + 1) % N_PATCHES + 1, "alpha": 0.3}
                )
            r = await activate(client, entries, expected_revision=rev - 1)
            assert r.status_code == 200, r.text
            stacks[rev] = entries
            await asyncio.wait_for(served_under_load(rev), timeout=10)
        done.set()

    await asyncio.gather(operator(), *(caller() for _ in range(N_CLIENTS)))

    assert len(responses) > N_REVISIONS
    seen = set()
    for r in responses:
        assert r.status_code == 200, r.text
        body = r.json()
        rev = body["revision"]
        assert r.headers["X-Eraser-Revision"] == str(rev)
        named = [
            {"name": e["patch"], "version": e["version"], "alpha": e["alpha"]} for e in stacks[rev]
        ]
        assert body["patches"] == named
        got = np.array([[p["probabilities"][c] for c in CLASSES] for p in body["predictions"]])
        np.testing.assert_allclose(got, expected_fair(body, outputs, stacks[rev]), atol=1e-5)
        seen.add(rev)
    assert set(range(1, N_REVISIONS + 1)) <= seen


async def test_another_replica_follows_the_active_revision(
    client: httpx.AsyncClient, settings: GatewaySettings
) -> None:
    replica = create_app(settings, GatewayMetrics())
    async with replica.router.lifespan_context(replica):
        await register_patch(client, "race", random_patch(7))
        assert (await activate(client, [{"patch": "race", "version": 1}], 0)).status_code == 200
        assert await served_revision(replica, expected=1)


async def test_a_failed_hot_load_keeps_the_old_stack_and_is_counted(
    app: FastAPI, client: httpx.AsyncClient, redis_client: aioredis.Redis, metrics: GatewayMetrics
) -> None:
    await register_patch(client, "race", random_patch(1))
    await activate(client, [{"patch": "race", "version": 1}], 0)
    r = await register_patch(client, "race", random_patch(2))
    await activate(client, [{"patch": "race", "version": 2}], expected_revision=1)
    await activate(client, [{"patch": "race", "version": 1}], expected_revision=2)
    registry = app.state.gateway.registry
    # The blob of v2 is damaged once it is no longer active; a rollback must not serve it.
    await redis_client.set(registry.keys.blob(r.json()["sha256"]), b"tampered bytes")
    app.state.gateway.watcher.cache.retain(set())  # as a freshly started replica would

    r = await client.post(f"/models/{MODEL}/stack/rollback", headers=ADMIN)
    assert r.status_code == 409 and "hash mismatch" in r.json()["error"]["message"]
    await redis_client.set(registry.keys.stack_revision(MODEL), 4)  # announce a bogus revision
    await app.state.gateway.watcher.refresh(MODEL)
    labels = {"model": MODEL, "outcome": "failure"}
    assert metrics.registry.get_sample_value("eraser_hotload_total", labels) == 1.0
    pred = await client.post(
        "/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS.tolist()}
    )
    assert pred.status_code == 200 and pred.json()["revision"] == 3
    view = (await client.get(f"/models/{MODEL}/stack", headers=ADMIN)).json()
    assert view["stack"]["revision"] == 3 and view["served_revision"] == 3
    assert "announces revision 4" in view["load_error"]


async def served_revision(app: FastAPI, expected: int, timeout_s: float = 5.0) -> bool:
    watcher = app.state.gateway.watcher
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if watcher.served_revision(MODEL) == expected:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_gateway_without_its_registry_starts_not_ready_and_says_why(
    key_prefix: str, blackbox_url: str
) -> None:
    settings = make_settings(key_prefix, blackbox_url)
    settings.redis.url = f"redis://127.0.0.1:{refused_port()}/0"
    app = create_app(settings, GatewayMetrics())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gw") as client,
    ):
        assert (await client.get("/v2/health/ready")).status_code == 503
        r = await client.post(
            "/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS.tolist()}
        )
        assert r.status_code == 503
        assert "registry unreachable" in r.json()["error"]["message"]
        for method, path in (("GET", "/jobs/distill-x"), ("GET", "/patches")):
            r = await client.request(method, path, headers=ADMIN)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"]["code"] == "redis_unavailable"
