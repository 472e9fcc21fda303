"""The stand-in OIP v2 server, started for real (uvicorn + uvloop + httptools) on a free port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from blackbox.data import compas_split, load_compas
from blackbox.model import MlpWeights
from blackbox.server import create_app, ensure_model
from deploy.local.processes import free_port, launched
from tests.servers import running_server


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bb") / "models" / "compas_mlp.npz"
    ensure_model(path)  # trains (missing file) and saves
    return path


@pytest.fixture(scope="module")
def model(model_path: Path) -> MlpWeights:
    return MlpWeights.load(model_path)


@pytest.fixture(scope="module")
def server_url(model: MlpWeights) -> Iterator[str]:
    app = create_app(model, name="compas")
    with running_server(app, loop="uvloop", http="httptools") as url:
        yield url


@pytest.fixture
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=5.0) as c:
        yield c


def _infer_body(x: np.ndarray, outputs: list[str] | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "req-1",
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ],
    }
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


def test_model_save_load_roundtrip(model_path: Path, model: MlpWeights) -> None:
    again = ensure_model(model_path)  # exists now: loaded, not retrained
    x = load_compas().X[:50]
    np.testing.assert_array_equal(again.logits(x), model.logits(x))
    assert model.classes == ["no_recid", "recid"]
    assert len(model.weights) == 3 and model.weights[0].shape == (7, 32)


def test_model_is_better_than_chance_and_biased(model: MlpWeights) -> None:
    data = load_compas()
    test = data.subset(compas_split(data).test)
    pred = model.probabilities(test.X)[:, 1] > 0.5
    assert (pred == test.y).mean() > 0.6
    rates = {r: pred[test.race == r].mean() for r in ("African-American", "Caucasian")}
    assert rates["African-American"] - rates["Caucasian"] > 0.1


def test_health_and_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/compas/ready").json()["ready"] is True
    meta = client.get("/v2/models/compas").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 7]}]
    assert {o["name"]: o["shape"] for o in meta["outputs"]} == {
        "logits": [-1, 2],
        "probabilities": [-1, 2],
    }
    assert meta["parameters"]["classes"] == ["no_recid", "recid"]
    assert client.get("/v2/models/other").status_code == 404


@pytest.mark.parametrize("n", [1, 33])
def test_infer_logits_match_numpy_forward(client: httpx.Client, model: MlpWeights, n: int) -> None:
    x = load_compas().X[:n]
    res = client.post("/v2/models/compas/infer", json=_infer_body(x))
    assert res.status_code == 200
    body = res.json()
    assert body["model_name"] == "compas" and body["id"] == "req-1"
    (out,) = body["outputs"]
    assert (out["name"], out["shape"], out["datatype"]) == ("logits", [n, 2], "FP32")
    got = np.asarray(out["data"], dtype=np.float32).reshape(n, 2)
    np.testing.assert_allclose(got, model.logits(x), rtol=1e-6, atol=1e-6)
    assert np.all(got[:, 0] == 0.0)


def test_infer_honours_requested_outputs(client: httpx.Client, model: MlpWeights) -> None:
    x = load_compas().X[:5]
    body = client.post(
        "/v2/models/compas/versions/1/infer", json=_infer_body(x, ["probabilities", "logits"])
    ).json()
    assert [o["name"] for o in body["outputs"]] == ["probabilities", "logits"]
    probs = np.asarray(body["outputs"][0]["data"]).reshape(5, 2)
    np.testing.assert_allclose(probs, model.probabilities(x), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [{"name": "x", "shape": [1, 6], "datatype": "FP32", "data": [0.0] * 6}]},
        {"inputs": [{"name": "x", "shape": [2, 7], "datatype": "FP32", "data": [0.0] * 7}]},
        {"inputs": [{"name": "x", "shape": [7], "datatype": "FP32", "data": [0.0] * 7}]},
        {"inputs": [{"name": "x", "shape": [1, 7], "datatype": "BYTES", "data": ["a"] * 7}]},
        {"inputs": [{"name": "x", "shape": [1, 7], "datatype": "FP32", "data": ["a"] * 7}]},
        {
            "inputs": [{"name": "x", "shape": [1, 7], "datatype": "FP32", "data": [0.0] * 7}],
            "outputs": [{"name": "nope"}],
        },
        {"instances": [[0.0] * 7]},
    ],
)
def test_bad_requests_get_4xx_json(client: httpx.Client, body: dict[str, object]) -> None:
    res = client.post("/v2/models/compas/infer", json=body)
    assert 400 <= res.status_code < 500
    assert isinstance(res.json()["error"], str)


def test_invalid_json_and_unknown_model(client: httpx.Client) -> None:
    res = client.post("/v2/models/compas/infer", content=b"{not json")
    assert res.status_code == 400 and "error" in res.json()
    x = np.zeros((1, 7), dtype=np.float32)
    assert client.post("/v2/models/nope/infer", json=_infer_body(x)).status_code == 404


def test_cli_serve_subprocess_with_delay(model_path: Path, model: MlpWeights) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        "-m",
        "blackbox",
        "serve",
        "--port",
        str(port),
        "--model-path",
        str(model_path),
        "--delay-ms",
        "50",
        "--name",
        "m2",
    ]
    with launched(args, f"{url}/v2/health/ready", "test-blackbox-cli"):
        x = load_compas().X[:3]
        start = time.perf_counter()
        res = httpx.post(f"{url}/v2/models/m2/infer", json=_infer_body(x), timeout=5.0)
        assert time.perf_counter() - start >= 0.05
        got = np.asarray(res.json()["outputs"][0]["data"]).reshape(3, 2)
        np.testing.assert_allclose(got, model.logits(x), atol=1e-6)
