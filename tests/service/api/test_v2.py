"""The drop-in Open Inference Protocol v2 route round-trips like the upstream, debiased."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from service import eraser_math as em
from tests.service.api.conftest import MODEL, PREDICT, activate, random_patch, register_patch

ROWS = np.array([[25, 3, 0, 0, 1, 1, 1], [45, 0, 0, 0, 0, 0, 0]], dtype=np.float32)


def v2_request(rows: np.ndarray, **parameters: object) -> dict:
    return {
        "id": "req-1",
        "inputs": [
            {
                "name": "x",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.reshape(-1).tolist(),
            }
        ],
        "parameters": parameters,
    }


async def test_v2_infer_answers_fair_logits_in_v2_shape(client: httpx.AsyncClient) -> None:
    await register_patch(client, "race", random_patch(3))
    await activate(client, [{"patch": "race", "version": 1, "alpha": 1.0}], 0)
    url = f"/v2/models/{MODEL}/infer"
    r = await client.post(url, headers=PREDICT, json=v2_request(ROWS, return_raw=True))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == MODEL and body["id"] == "req-1" and body["model_version"] == "1"
    assert body["parameters"]["debiased"] is True and r.headers["X-Eraser-Revision"] == "1"
    fair, raw = body["outputs"]
    assert (fair["name"], fair["shape"], fair["datatype"]) == ("logits", [2, 2], "FP32")
    assert raw["name"] == "raw_logits"
    native = await client.post(
        "/predict", headers=PREDICT, json={"model": MODEL, "instances": ROWS.tolist()}
    )
    fair_probs = em.softmax_from_log(em.log_softmax(np.array(fair["data"]).reshape(2, 2)))
    expected = [
        [p["probabilities"][c] for c in ("no_recid", "recid")] for p in native.json()["predictions"]
    ]
    np.testing.assert_allclose(fair_probs, expected, atol=1e-5)


async def test_v2_metadata_and_readiness(client: httpx.AsyncClient) -> None:
    meta = (await client.get(f"/v2/models/{MODEL}", headers=PREDICT)).json()
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 7]}
    assert meta["outputs"][0]["shape"] == [-1, 2]
    assert (await client.get(f"/v2/models/{MODEL}/ready", headers=PREDICT)).json()["ready"]
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    assert (await client.get("/v2/models/nope", headers=PREDICT)).status_code == 404
    server = (await client.get("/v2", headers=PREDICT)).json()
    assert "binary_tensor_data" in server["extensions"] and server["name"] == "eraser-gateway"


async def test_versioned_routes_serve_any_version_as_the_unversioned_ones(
    client: httpx.AsyncClient,
) -> None:
    """tritonclient's ``model_version`` paths: the gateway has one version per model, so any
    version string is served by the same handlers (key, errors included)."""
    base = f"/v2/models/{MODEL}"
    plain = (await client.get(base, headers=PREDICT)).json()
    plain_answer = await client.post(f"{base}/infer", headers=PREDICT, json=v2_request(ROWS))
    for version in ("1", "0", "not-a-revision"):
        versioned = f"{base}/versions/{version}"
        assert (await client.get(versioned, headers=PREDICT)).json() == plain
        ready = await client.get(f"{versioned}/ready", headers=PREDICT)
        assert ready.status_code == 200 and ready.json() == {"name": MODEL, "ready": True}
        r = await client.post(f"{versioned}/infer", headers=PREDICT, json=v2_request(ROWS))
        assert r.status_code == 200, r.text
        assert r.json()["outputs"] == plain_answer.json()["outputs"]
        assert r.json()["model_version"] == plain_answer.json()["model_version"]
    unknown = await client.post(
        "/v2/models/nope/versions/1/infer", headers=PREDICT, json=v2_request(ROWS)
    )
    assert unknown.status_code == 404 and "unknown model" in unknown.json()["error"]
    no_key = await client.post(f"{base}/versions/1/infer", json=v2_request(ROWS))
    assert no_key.status_code == 401 and "error" in no_key.json()
    operation = (await client.get("/openapi.json")).json()["paths"][
        "/v2/models/{model}/versions/{version}/infer"
    ]["post"]
    assert {p["name"] for p in operation["parameters"]} == {"model", "version"}
    assert "requestBody" in operation


async def test_metadata_reports_the_declared_output_datatype(
    client: httpx.AsyncClient, recording_client: httpx.AsyncClient
) -> None:
    default = (await client.get(f"/v2/models/{MODEL}", headers=PREDICT)).json()
    assert default["outputs"][0]["datatype"] == "FP32"
    fp64 = (await recording_client.get(f"/v2/models/{MODEL}", headers=PREDICT)).json()
    assert fp64["outputs"][0] == {"name": "logits", "datatype": "FP64", "shape": [-1, 2]}
    answer = await recording_client.post(
        f"/v2/models/{MODEL}/infer", headers=PREDICT, json=v2_request(ROWS)
    )
    assert answer.json()["outputs"][0]["datatype"] == "FP64"


async def test_v2_bad_tensor_is_a_400_with_the_protocols_error_body(
    client: httpx.AsyncClient,
) -> None:
    """OIP: a failed request is an HTTP error status (typically 400) with {"error": "<msg>"}."""
    bad = v2_request(ROWS[:, :6].copy())
    r = await client.post(f"/v2/models/{MODEL}/infer", headers=PREDICT, json=bad)
    assert r.status_code == 400 and "model expects" in r.json()["error"]
    assert r.headers["X-Eraser-Error-Code"] == "invalid_instances"
    bad = v2_request(ROWS)
    bad["inputs"][0]["data"] = bad["inputs"][0]["data"][:-1]
    r = await client.post(f"/v2/models/{MODEL}/infer", headers=PREDICT, json=bad)
    assert r.status_code == 400 and "does not fill shape" in r.json()["error"]


async def test_v2_non_finite_input_and_oversized_batch_are_refused(
    client: httpx.AsyncClient,
) -> None:
    overflow = v2_request(ROWS)
    overflow["inputs"][0]["data"][3] = 1e39  # finite in JSON, infinite as float32
    r = await client.post(f"/v2/models/{MODEL}/infer", headers=PREDICT, json=overflow)
    assert r.status_code == 400 and "instance 0 contains NaN or infinity" in r.json()["error"]
    big = v2_request(np.zeros((1025, 7), dtype=np.float32))
    r = await client.post(f"/v2/models/{MODEL}/infer", headers=PREDICT, json=big)
    assert r.status_code == 400 and "1025 instances exceed the limit of 1024" in r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v2/models/nope", PREDICT, 404),
        ("GET", "/v2/models/nope/ready", PREDICT, 404),
        ("POST", "/v2/models/nope/infer", PREDICT, 404),
        ("GET", f"/v2/models/{MODEL}", {}, 401),
        ("POST", f"/v2/models/{MODEL}/infer", {"Authorization": "Bearer wrong"}, 403),
        ("GET", "/v2/no/such/route", {}, 404),
        ("DELETE", "/v2/health/live", {}, 405),
    ],
)
async def test_every_v2_error_is_the_protocols_body(
    client: httpx.AsyncClient, method: str, path: str, headers: dict, status: int
) -> None:
    body = v2_request(ROWS) if method == "POST" else None
    r = await client.request(method, path, headers=headers, json=body)
    assert r.status_code == status
    error = r.json()
    assert list(error) == ["error"] and isinstance(error["error"], str) and error["error"]


async def test_v2_malformed_json_and_fields_are_400(client: httpx.AsyncClient) -> None:
    url = f"/v2/models/{MODEL}/infer"
    r = await client.post(url, headers=PREDICT, content=b"{not json")
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = await client.post(url, headers=PREDICT, json={"inputs": "x"})
    assert r.status_code == 400 and r.json()["error"].startswith("body.inputs")


async def test_native_predict_keeps_its_richer_error_body(client: httpx.AsyncClient) -> None:
    r = await client.post("/predict", headers=PREDICT, json={"model": "nope", "instances": [[1]]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert "X-Eraser-Error-Code" not in r.headers


async def test_v2_oversized_body_is_a_413_in_the_protocols_body(
    key_prefix: str, blackbox_url: str, redis_client: object
) -> None:
    from service.api.app import create_app
    from tests.service.api.conftest import make_settings

    settings = make_settings(key_prefix, blackbox_url)
    settings.limits.predict_body_mb = 0.001
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
            r = await c.post(f"/v2/models/{MODEL}/infer", headers=PREDICT, content=b"x" * 4096)
    assert r.status_code == 413 and "exceeds" in r.json()["error"]
