"""Monitored predictions and ``POST /feedback`` through the gateway, against the real stand-in
black box and a real Redis."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from service.api.app import create_app
from service.metrics import GatewayMetrics
from service.monitoring.store import new_request_id
from tests.fixtures_upstream import fake_upstream, refused_port
from tests.service.api.conftest import (
    ADMIN,
    MODEL,
    PREDICT,
    activate,
    random_patch,
    register_patch,
)
from tests.service.monitoring.conftest import FEEDBACK, monitored_settings

ROWS = [[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0], [31, 10, 1, 0, 0, 1, 1]]
MONITOR = [{"race": "African-American", "sex": "Male"}, {"race": "Caucasian"}, {"sex": "Female"}]


def bias(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(
        f"eraser_bias_{name}_total", {"model": MODEL, **labels}
    )


async def monitored_predict(client: httpx.AsyncClient, **extra: object) -> dict:
    body = {"model": MODEL, "instances": ROWS, "monitor": MONITOR, "return_raw": True, **extra}
    r = await client.post("/predict", headers=PREDICT, json=body)
    assert r.status_code == 200, r.text
    return r.json()


def labels_of(body: dict, field: str) -> list[str]:
    return [max(p[field], key=p[field].get) for p in body["predictions"]]


async def test_a_monitored_answer_carries_a_request_id_and_its_decisions_are_counted(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    await register_patch(client, "race", random_patch(seed=3))
    await activate(client, [{"patch": "race", "version": 1, "alpha": 1.0}], 0)
    body = await monitored_predict(client)
    assert body["request_id"] and body["debiased"] is True
    raw, fair = labels_of(body, "raw_probabilities"), labels_of(body, "probabilities")
    for stage, labels in (("raw", raw), ("fair", fair)):
        black = {"attribute": "race", "group": "African-American", "stage": stage}
        assert bias(metrics, "decisions", **black, label=labels[0]) == 1
        male = {"attribute": "sex", "group": "Male", "stage": stage}
        assert bias(metrics, "positive_decisions", **male) == float(labels[0] == "no_recid")
        female = {"attribute": "sex", "group": "Female", "stage": stage}
        assert bias(metrics, "decisions", **female, label=labels[2]) == 1
    other = {"attribute": "race", "group": "Other", "stage": "fair", "label": fair[0]}
    assert bias(metrics, "decisions", **other) == 0


async def test_an_answer_without_monitor_counts_and_stores_nothing(
    client: httpx.AsyncClient, metrics: GatewayMetrics, redis_client: aioredis.Redis, app: FastAPI
) -> None:
    r = await client.post("/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS})
    assert r.status_code == 200 and "request_id" not in r.json()
    samples = [
        s.value
        for family in metrics.registry.collect()
        if family.name == "eraser_bias_decisions"
        for s in family.samples
        if s.name.endswith("_total")
    ]
    assert samples and not any(samples)
    store = app.state.gateway.monitor.store
    assert not [k async for k in redis_client.scan_iter(match=f"{store.prefix}:monitor:*")]


async def test_monitoring_attributes_never_reach_the_upstream(
    key_prefix: str, redis_client: aioredis.Redis
) -> None:
    async with fake_upstream() as upstream:
        model = {
            "name": "other",
            "classes": ["a", "b"],
            "input": {"shape": [7]},
            "upstream": {"url": upstream.url()},
            "monitoring": {"attributes": {"race": {"groups": ["Zyx-group", "Qwv-group"]}}},
        }
        settings = monitored_settings(key_prefix, "http://127.0.0.1:1", models=[model])
        app = create_app(settings, GatewayMetrics())
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                body = {"model": "other", "instances": ROWS[:2]}
                monitor = [{"race": "Zyx-group"}, {"race": "Qwv-group"}]
                r = await client.post("/predict", headers=PREDICT, json=body | {"monitor": monitor})
                assert r.status_code == 200 and r.json()["request_id"]
                v2 = {
                    "inputs": [
                        {"name": "x", "shape": [2, 7], "datatype": "FP32", "data": ROWS[:2]}
                    ],
                    "parameters": {"monitor": monitor},
                }
                r = await client.post("/v2/models/other/infer", headers=PREDICT, json=v2)
                assert r.status_code == 200, r.text
    sent = json.dumps(upstream.bodies)
    assert len(upstream.bodies) == 2 and "group" not in sent and "monitor" not in sent


async def test_the_v2_route_takes_monitor_as_a_parameter_and_answers_a_request_id(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [3, 7], "datatype": "FP32", "data": ROWS}],
        "parameters": {"monitor": MONITOR},
    }
    r = await client.post(f"/v2/models/{MODEL}/infer", headers=PREDICT, json=body)
    assert r.status_code == 200, r.text
    request_id = r.json()["parameters"]["eraser_request_id"]
    fb = {"request_id": request_id, "index": 1, "label": "recid"}
    assert (await client.post("/feedback", headers=FEEDBACK, json=fb)).status_code == 200
    r = await client.post(
        f"/v2/models/{MODEL}/infer", headers=PREDICT, json=body | {"parameters": {"monitor": 3}}
    )
    assert r.status_code == 400 and r.headers["X-Eraser-Error-Code"] == "invalid_monitor"


async def test_a_bad_monitor_field_is_a_422_and_costs_no_upstream_call(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    body = {"model": MODEL, "instances": ROWS, "monitor": [{"race": "Martian"}, {}, {}]}
    r = await client.post("/predict", headers=PREDICT, json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_monitor" and "Caucasian" in error["groups"]
    upstream_calls = metrics.registry.get_sample_value(
        "eraser_stage_duration_seconds_count", {"model": MODEL, "stage": "upstream"}
    )
    assert upstream_calls is None


async def test_feedback_counts_the_label_once_per_instance_for_both_stages(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    body = await monitored_predict(client)
    raw, fair = labels_of(body, "raw_probabilities"), labels_of(body, "probabilities")
    fb = {"request_id": body["request_id"], "index": 0, "label": "recid"}
    r = await client.post("/feedback", headers=FEEDBACK, json=fb)
    assert r.status_code == 200, r.text
    assert r.json() == {
        **fb,
        "model": MODEL,
        "correct": {"raw": raw[0] == "recid", "fair": fair[0] == "recid"},
    }
    for attr, group in (("race", "African-American"), ("sex", "Male")):
        for stage, labels in (("raw", raw), ("fair", fair)):
            correct = str(labels[0] == "recid").lower()
            labels_ = {"attribute": attr, "group": group, "stage": stage, "true_label": "recid"}
            assert bias(metrics, "feedback", **labels_, correct=correct) == 1
    again = await client.post("/feedback", headers=ADMIN, json=fb)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "feedback_already_recorded"


def one_char_off(request_id: str) -> str:
    return request_id[:-1] + ("0" if request_id[-1] != "0" else "1")


async def test_request_ids_are_32_random_hex_characters_and_distinct(
    client: httpx.AsyncClient,
) -> None:
    ids = [(await monitored_predict(client))["request_id"] for _ in range(30)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("change", "status", "code", "reason"),
    [
        ({"request_id": new_request_id()}, 404, "request_not_found", "unknown"),
        ({"request_id": "1000-0"}, 422, "invalid_request", None),  # the ids of earlier releases
        ({"request_id": "9" * 30 + "-0"}, 422, "invalid_request", None),  # was a Redis error
        ({"request_id": "nonsense"}, 422, "invalid_request", None),
        ({"request_id": "A" * 32}, 422, "invalid_request", None),
        ({"request_id": "a" * 33}, 422, "invalid_request", None),
        ({"request_id": "a" * 100_000}, 422, "invalid_request", None),
        ({"index": 3}, 422, "invalid_feedback", None),
        ({"label": "maybe"}, 422, "invalid_feedback", None),
    ],
)
async def test_feedback_that_matches_no_served_instance_says_why(
    client: httpx.AsyncClient, change: dict, status: int, code: str, reason: str | None
) -> None:
    body = await monitored_predict(client)
    fb = {"request_id": body["request_id"], "index": 0, "label": "recid"} | change
    r = await client.post("/feedback", headers=FEEDBACK, json=fb)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error.get("reason") == reason


async def test_an_issued_id_with_one_character_changed_is_not_found(
    client: httpx.AsyncClient,
) -> None:
    body = await monitored_predict(client)
    fb = {"request_id": one_char_off(body["request_id"]), "index": 0, "label": "recid"}
    r = await client.post("/feedback", headers=FEEDBACK, json=fb)
    assert r.status_code == 404, r.text
    assert r.json()["error"]["reason"] == "unknown"
    fb["request_id"] = body["request_id"]
    assert (await client.post("/feedback", headers=FEEDBACK, json=fb)).status_code == 200


async def test_feedback_needs_the_feedback_or_admin_key(client: httpx.AsyncClient) -> None:
    fb = {"request_id": new_request_id(), "index": 0, "label": "recid"}
    assert (await client.post("/feedback", json=fb)).status_code == 401
    assert (await client.post("/feedback", headers=PREDICT, json=fb)).status_code == 403
    assert (await client.post("/feedback", headers=FEEDBACK, json=fb)).status_code == 404


async def test_a_failing_store_leaves_the_prediction_whole_without_a_request_id(
    app: FastAPI, client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    store = app.state.gateway.monitor.store
    store.redis = aioredis.Redis(port=refused_port(), socket_connect_timeout=0.2)
    try:
        body = await monitored_predict(client)
        assert body["request_id"] is None and len(body["predictions"]) == 3
        assert (
            metrics.registry.get_sample_value(
                "eraser_monitoring_store_errors_total", {"operation": "put"}
            )
            == 1
        )
        fb = {"request_id": new_request_id(), "index": 0, "label": "recid"}
        r = await client.post("/feedback", headers=FEEDBACK, json=fb)
        assert r.status_code == 503 and r.json()["error"]["code"] == "monitoring_store_unavailable"
    finally:
        await store.redis.aclose()


async def test_corrections_and_patch_latency_and_the_active_stack_are_exported(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    m = {"model": MODEL}
    await register_patch(client, "race", random_patch(seed=5))
    await register_patch(client, "race", random_patch(seed=6))
    await activate(client, [{"patch": "race", "version": 1, "alpha": 1.0}], 0)
    r = await client.post(
        "/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS, "return_raw": True}
    )
    body = r.json()
    raw, fair = labels_of(body, "raw_probabilities"), labels_of(body, "probabilities")
    get = metrics.registry.get_sample_value
    assert get("eraser_debiased_decisions_total", m) == 3
    assert get("eraser_flipped_decisions_total", m) == sum(
        a != b for a, b in zip(raw, fair, strict=True)
    )
    assert get("eraser_correction_kl_count", m) == 3
    assert get("eraser_correction_kl_sum", m) > 0
    patch = {"model": MODEL, "patch": "race", "version": "1"}
    assert get("eraser_patch_duration_seconds_count", patch) == 1
    info = {"model": MODEL, "revision": "1", "patch": "race", "version": "1", "alpha": "1.0"}
    assert get("eraser_active_patch_info", info) == 1

    await activate(client, [{"patch": "race", "version": 2, "alpha": 0.5}], 1)
    assert get("eraser_active_patch_info", info) is None
    info2 = {"model": MODEL, "revision": "2", "patch": "race", "version": "2", "alpha": "0.5"}
    assert get("eraser_active_patch_info", info2) == 1
    assert get("eraser_active_revision", m) == 2


def test_kl_of_an_unchanged_answer_is_zero_and_grows_with_the_correction() -> None:
    from service.eraser_math import log_softmax
    from service.monitoring.corrections import correction_kl

    raw = log_softmax(np.array([[2.0, 0.0], [0.0, 0.0]]))
    small = log_softmax(np.array([[1.5, 0.0], [0.0, 0.0]]))
    large = log_softmax(np.array([[-2.0, 0.0], [0.0, 0.0]]))
    np.testing.assert_allclose(correction_kl(raw, raw), [0.0, 0.0], atol=1e-12)
    assert 0 < correction_kl(raw, small)[0] < correction_kl(raw, large)[0]
    p, q = np.exp(large[0]), np.exp(raw[0])
    np.testing.assert_allclose(correction_kl(raw, large)[0], np.sum(p * np.log(p / q)))


def test_kl_counts_a_class_with_probability_zero_in_both_answers_as_nothing() -> None:
    from service.monitoring.corrections import correction_kl

    with np.errstate(divide="ignore"):  # log(0) = −inf, as from an upstream of probabilities
        raw = np.log(np.array([[0.5, 0.5, 0.0]]))
        fair = np.log(np.array([[0.25, 0.75, 0.0]]))
    expected = 0.25 * np.log(0.25 / 0.5) + 0.75 * np.log(0.75 / 0.5)
    np.testing.assert_allclose(correction_kl(raw, fair), [expected])
