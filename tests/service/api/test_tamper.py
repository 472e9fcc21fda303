"""Nothing a Redis writer can steer: a replica serves only signed stacks of validated or approved
versions, never goes back to a lower revision, and says so — logged, counted, on the stack
route and in readiness — when it refuses. Each test edits Redis as an attacker with write
access (or an infrastructure failure) would, against a gateway with its real Redis."""

from __future__ import annotations

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from service.errors import BadRequest
from service.metrics import GatewayMetrics
from service.registry.models import REJECTED, StackEntry, VersionStatus
from service.registry.store import Registry
from tests.conftest import SIGNING_KEY
from tests.service.api.conftest import (
    ADMIN,
    MODEL,
    PREDICT,
    activate,
    random_patch,
    register_patch,
)

ROWS = [[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0]]
FAILURES = {"model": MODEL, "outcome": "failure"}
HUGE_ALPHA = {"patch": "race", "version": 1, "alpha": 1e6}


async def _serving_v1(client: httpx.AsyncClient) -> None:
    """Two approved versions; v1 active at revision 1."""
    for seed in (1, 2):
        assert (await register_patch(client, "race", random_patch(seed))).status_code == 201
    assert (await activate(client, [{"patch": "race", "version": 1}], 0)).status_code == 200


async def _publish(app: FastAPI, redis: aioredis.Redis, record: dict, revision: int) -> None:
    """Write a stack record and its revision as a Redis writer would, then let the replica see
    it (the poller would within ``poll_interval_s``; ``refresh`` makes it deterministic)."""
    keys = app.state.gateway.registry.keys
    await redis.set(keys.stack(MODEL), orjson.dumps(record))
    await redis.set(keys.stack_revision(MODEL), revision)
    await app.state.gateway.watcher.refresh(MODEL)


async def _served(client: httpx.AsyncClient) -> dict:
    r = await client.post("/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS})
    assert r.status_code == 200, r.text
    return r.json()


def _failures(metrics: GatewayMetrics) -> float:
    return metrics.registry.get_sample_value("eraser_hotload_total", FAILURES) or 0.0


async def test_an_edited_stack_record_is_refused_counted_and_shown(
    app: FastAPI, client: httpx.AsyncClient, redis_client: aioredis.Redis, metrics: GatewayMetrics
) -> None:
    await _serving_v1(client)
    stored = orjson.loads(await redis_client.get(app.state.gateway.registry.keys.stack(MODEL)))
    stored |= {"revision": 2, "entries": [{"patch": "race", "version": 2, "alpha": 3.0}]}
    await _publish(app, redis_client, stored, 2)  # the old signature no longer matches

    assert (await _served(client))["revision"] == 1
    assert _failures(metrics) == 1.0
    r = await client.get(f"/models/{MODEL}/stack", headers=ADMIN)
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert "fails its signature" in error["message"]
    assert error["served_revision"] == 1 and "fails its signature" in error["load_error"]
    ready = (await client.get("/v2/health/ready")).json()
    assert ready["ready"] is True and "fails its signature" in ready["problems"][MODEL]["error"]
    for _ in range(3):  # polls do not count the same refusal again
        await app.state.gateway.watcher.refresh(MODEL)
    assert _failures(metrics) == 1.0


async def test_an_unsigned_or_empty_stack_and_a_huge_alpha_are_refused(
    app: FastAPI, client: httpx.AsyncClient, redis_client: aioredis.Redis, metrics: GatewayMetrics
) -> None:
    await _serving_v1(client)
    for revision, record in enumerate(
        [
            {"model": MODEL, "revision": 2, "entries": []},
            {"model": MODEL, "revision": 3, "entries": [HUGE_ALPHA]},
        ],
        start=2,
    ):
        await _publish(app, redis_client, record, revision)
        assert (await _served(client))["revision"] == 1
    assert _failures(metrics) == 2.0


async def test_a_status_set_by_hand_does_not_make_a_rejected_version_servable(
    app: FastAPI, client: httpx.AsyncClient, redis_client: aioredis.Redis, metrics: GatewayMetrics
) -> None:
    await _serving_v1(client)
    registry: Registry = app.state.gateway.registry
    await registry.set_status("race", 2, VersionStatus(status=REJECTED, reason="biased"))
    forged = {"status": "validated", "reason": "trust me"}
    await redis_client.hset(registry.keys.status("race", 2), mapping=forged)

    view = (await client.get("/patches/race/versions/2", headers=ADMIN)).json()
    assert view["status"]["status"] == "unverified"
    r = await activate(client, [{"patch": "race", "version": 2}], 1)
    assert r.status_code == 409 and r.json()["error"]["code"] == "patch_rejected"
    # A replica given a correctly signed stack that lists it still refuses it.
    await registry._compare_and_set(MODEL, [StackEntry(patch="race", version=2)], 1, "forged")
    await app.state.gateway.watcher.refresh(MODEL)
    assert (await _served(client))["revision"] == 1
    assert "unverified" in app.state.gateway.watcher.load_error(MODEL)


async def test_alpha_outside_the_configured_range_is_refused_at_the_door_and_by_replicas(
    app: FastAPI, client: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    await _serving_v1(client)
    r = await activate(client, [{"patch": "race", "version": 2, "alpha": 9.0}], 1)
    assert r.status_code == 400 and "max_alpha" in r.json()["error"]["message"]
    with pytest.raises(BadRequest, match="max_alpha"):  # a job's activation is refused too
        await app.state.gateway.registry.set_stack(MODEL, [StackEntry(patch="race", version=2,
                                                                      alpha=9.0)], 1)  # fmt: skip
    prefix = app.state.gateway.settings.redis.key_prefix  # a trainer with the key, misconfigured
    trainer = Registry(redis_client, SIGNING_KEY, prefix)
    await trainer.set_stack(MODEL, [StackEntry(patch="race", version=2, alpha=9.0)], 1)
    await app.state.gateway.watcher.refresh(MODEL)
    assert (await _served(client))["revision"] == 1
    assert "outside the configured range" in app.state.gateway.watcher.load_error(MODEL)


async def test_a_replayed_older_signed_stack_is_refused(
    app: FastAPI, client: httpx.AsyncClient, redis_client: aioredis.Redis, metrics: GatewayMetrics
) -> None:
    await _serving_v1(client)
    keys = app.state.gateway.registry.keys
    old = await redis_client.get(keys.stack(MODEL))  # revision 1, correctly signed
    assert (await activate(client, [{"patch": "race", "version": 2}], 1)).status_code == 200
    await _publish(app, redis_client, orjson.loads(old), 3)  # counter bumped, record replayed
    assert (await _served(client))["revision"] == 2
    assert "signed stack is revision 1" in app.state.gateway.watcher.load_error(MODEL)
    await redis_client.set(keys.stack_revision(MODEL), 1)  # now the counter goes back too
    await app.state.gateway.watcher.refresh(MODEL)
    assert (await _served(client))["revision"] == 2
    behind = {"model": MODEL}
    assert metrics.registry.get_sample_value("eraser_registry_behind", behind) == 1.0


async def test_a_registry_that_comes_back_empty_leaves_the_last_verified_stack_served(
    app: FastAPI, client: httpx.AsyncClient, redis_client: aioredis.Redis, metrics: GatewayMetrics
) -> None:
    await _serving_v1(client)
    served = await _served(client)
    prefix = app.state.gateway.settings.redis.key_prefix
    async for key in redis_client.scan_iter(match=f"{prefix}:*"):  # Redis restarted empty
        await redis_client.delete(key)
    await app.state.gateway.watcher.refresh(MODEL)

    again = await _served(client)
    assert again["revision"] == 1 and again["debiased"] is True
    assert again["predictions"] == served["predictions"]
    behind = {"model": MODEL}
    assert metrics.registry.get_sample_value("eraser_registry_behind", behind) == 1.0
    ready = await client.get("/v2/health/ready")
    assert ready.status_code == 200 and "behind" in ready.json()["problems"][MODEL]["error"]

    # Recovery: re-register, then carry the revision on past the one replicas report.
    assert (await register_patch(client, "race", random_patch(1))).status_code == 201
    body = {"entries": [{"patch": "race", "version": 1}], "expected_revision": 0,
            "revision_floor": 2}  # fmt: skip
    r = await client.put(f"/models/{MODEL}/stack", headers=ADMIN, json=body)
    assert r.status_code == 200 and r.json()["served_revision"] == 2, r.text
    assert metrics.registry.get_sample_value("eraser_registry_behind", behind) == 0.0
    assert "problems" not in (await client.get("/v2/health/ready")).json()


async def test_a_stack_whose_blob_is_missing_or_damaged_is_never_committed(
    app: FastAPI, client: httpx.AsyncClient, redis_client: aioredis.Redis
) -> None:
    await _serving_v1(client)
    keys = app.state.gateway.registry.keys
    manifest = (await client.get("/patches/race/versions/2", headers=ADMIN)).json()["manifest"]
    for damage in (b"tampered bytes", None):
        if damage is None:
            await redis_client.delete(keys.blob(manifest["sha256"]))
        else:
            await redis_client.set(keys.blob(manifest["sha256"]), damage)
        r = await activate(client, [{"patch": "race", "version": 2}], 1)
        assert r.status_code == 409 and r.json()["error"]["code"] == "artifact_integrity"
        assert (await app.state.gateway.registry.get_stack(MODEL)).revision == 1
