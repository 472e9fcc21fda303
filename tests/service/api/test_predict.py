"""``POST /predict`` against the real stand-in black box, with and without active patches."""

from __future__ import annotations

import httpx
import numpy as np
import onnxruntime as ort

from blackbox.model import CLASSES, MlpWeights
from service import eraser_math as em
from service.metrics import GatewayMetrics
from tests.service.api.conftest import MODEL, PREDICT, activate, random_patch, register_patch

ROWS = [[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0], [31, 10, 1, 0, 0, 1, 1]]


def probs_matrix(body: dict, field: str = "probabilities") -> np.ndarray:
    return np.array([[p[field][c] for c in CLASSES] for p in body["predictions"]])


async def test_without_patches_the_answer_is_the_upstreams_and_not_debiased(
    client: httpx.AsyncClient, blackbox_model: MlpWeights
) -> None:
    r = await client.post("/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["debiased"], body["revision"], body["patches"]) == (False, 0, [])
    assert r.headers["X-Eraser-Revision"] == "0"
    expected = em.softmax_from_log(em.log_softmax(blackbox_model.logits(np.array(ROWS))))
    np.testing.assert_allclose(probs_matrix(body), expected, atol=1e-5)


async def test_an_active_patch_is_subtracted_with_its_alpha(client: httpx.AsyncClient) -> None:
    blob = random_patch(seed=1)
    assert (await register_patch(client, "race", blob)).status_code == 201
    r = await activate(client, [{"patch": "race", "version": 1, "alpha": 0.7}], 0)
    assert r.status_code == 200, r.text
    assert r.json()["served_revision"] == 1

    r = await client.post(
        "/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS, "return_raw": True}
    )
    body = r.json()
    assert body["debiased"] is True and body["revision"] == 1
    assert body["patches"] == [{"name": "race", "version": 1, "alpha": 0.7}]
    log_g = ort.InferenceSession(blob).run(None, {"x": np.array(ROWS, np.float32)})[0]
    raw_log = np.log(probs_matrix(body, "raw_probabilities"))
    expected = em.softmax_from_log(em.fair_log_probs(raw_log, [log_g], [0.7]))
    np.testing.assert_allclose(probs_matrix(body), expected, atol=1e-5)
    labels = [CLASSES[i] for i in expected.argmax(axis=1)]
    assert [p["label"] for p in body["predictions"]] == labels


async def test_objects_keyed_by_feature_name_are_accepted(client: httpx.AsyncClient) -> None:
    from blackbox.data import FEATURE_NAMES

    rows = [dict(zip(FEATURE_NAMES, row, strict=True)) for row in ROWS]
    by_name = await client.post(
        "/predict", headers=PREDICT, json={"model": MODEL, "instances": rows}
    )
    by_list = await client.post(
        "/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS}
    )
    assert by_name.json()["predictions"] == by_list.json()["predictions"]


async def test_bad_requests_are_4xx_with_a_reason(client: httpx.AsyncClient) -> None:
    cases = [
        ({"model": "nope", "instances": ROWS}, 404, "unknown model 'nope'"),
        ({"model": MODEL, "instances": [[1, 2]]}, 422, "model expects [7]"),
        ({"model": MODEL, "instances": []}, 422, "non-empty"),
        ({"model": MODEL}, 422, "instances"),
        ({"model": MODEL, "instances": ROWS, "extra": 1}, 422, "extra"),
    ]
    for payload, status, reason in cases:
        r = await client.post("/predict", headers=PREDICT, json=payload)
        assert r.status_code == status, (payload, r.text)
        assert reason in r.json()["error"]["message"], r.text
    r = await client.post(
        "/predict", headers={**PREDICT, "content-type": "application/json"}, content=b"{not json"
    )
    assert r.status_code == 422


async def test_latency_is_recorded_by_stage_and_outcome(
    client: httpx.AsyncClient, metrics: GatewayMetrics
) -> None:
    await register_patch(client, "race", random_patch(seed=2))
    await activate(client, [{"patch": "race", "version": 1}], 0)
    for _ in range(3):
        await client.post("/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS})
    for stage in ("upstream", "patch", "total"):
        labels = {"model": MODEL, "stage": stage}
        assert metrics.registry.get_sample_value("eraser_stage_duration_seconds_count", labels) == 3
    outcome = {"model": MODEL, "route": "predict", "outcome": "debiased"}
    assert metrics.registry.get_sample_value("eraser_requests_total", outcome) == 3
    exposition = (await client.get("/metrics")).text
    assert 'eraser_active_revision{model="compas"} 1.0' in exposition


async def test_openapi_docs_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/predict" in paths and "/v2/models/{model}/infer" in paths
