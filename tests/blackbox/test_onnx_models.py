"""ONNX deployed models in the stand-in black box: the model directory format, and one server
process answering for several models by name over real HTTP on loopback.

The models are built with the ``onnx`` helper API (no torch), small enough that the expected
outputs are a line of numpy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from blackbox.__main__ import app as cli
from blackbox.model import MlpWeights
from blackbox.onnx_model import (
    OnnxModel,
    OnnxModelError,
    load_model_dir,
    write_onnx_model,
)
from blackbox.server import _parse_input, create_app
from deploy.local.processes import free_port, launched
from tests.servers import running_server

RNG = np.random.default_rng(0)
TAB_W = RNG.normal(size=(3, 2)).astype(np.float32)
TAB_B = RNG.normal(size=(2,)).astype(np.float32)
IMG_W = RNG.normal(size=(16, 3)).astype(np.float32)
TAB_FEATURES = ["a", "b", "c"]
IMG_CLASSES = ["cat", "dog", "bird"]


def _serialize(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # old enough for any onnxruntime >= 1.18
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tabular_onnx(w: np.ndarray = TAB_W, b: np.ndarray = TAB_B) -> bytes:
    """logits = x @ w + b, x float32 [N, F] (dynamic N)."""
    f, k = w.shape
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
        ],
        "tabular",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", f])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    return _serialize(graph)


def image_onnx(w: np.ndarray = IMG_W, batch: str | int = "N") -> bytes:
    """logits = flatten(x) @ w, x float32 [N, 1, 4, 4]."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "image",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, w.shape[1]])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _serialize(graph)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _body(x: np.ndarray, outputs: list[str] | None = None) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "r1",
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        ],
    }
    if outputs is not None:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


def _write_both(directory: Path) -> None:
    write_onnx_model(directory, "tab", tabular_onnx(), ["no", "yes"], [3], TAB_FEATURES)
    write_onnx_model(directory, "img", image_onnx(), IMG_CLASSES, [1, 4, 4])


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("onnx_models")
    _write_both(directory)
    return directory


@pytest.fixture(scope="module")
def server_url(models_dir: Path) -> Iterator[str]:
    models = load_model_dir(models_dir)
    with running_server(create_app(models), loop="uvloop", http="httptools") as url:
        yield url


@pytest.fixture
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=5.0) as c:
        yield c


# --- the directory format -------------------------------------------------------------------


def test_write_then_load_round_trip(models_dir: Path) -> None:
    assert sorted(p.name for p in models_dir.iterdir()) == [
        "img.json",
        "img.onnx",
        "tab.json",
        "tab.onnx",
    ]  # no temp files left behind
    assert json.loads((models_dir / "img.json").read_text()) == {
        "classes": IMG_CLASSES,
        "input_shape": [1, 4, 4],
        "feature_names": None,
    }
    models = load_model_dir(models_dir)
    assert list(models) == ["img", "tab"]
    tab, img = models["tab"], models["img"]
    assert (tab.classes, tab.feature_names, tab.input_shape) == (["no", "yes"], TAB_FEATURES, (3,))
    assert (img.classes, img.feature_names, img.input_shape) == (IMG_CLASSES, None, (1, 4, 4))
    assert tab.platform == img.platform == "onnxruntime"
    x = RNG.normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(tab.logits(x), x @ TAB_W + TAB_B, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tab.probabilities(x), _softmax(x @ TAB_W + TAB_B), atol=1e-6)
    images = RNG.normal(size=(4, 1, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(img.logits(images), images.reshape(4, 16) @ IMG_W, atol=1e-5)
    assert img.logits(np.zeros((0, 1, 4, 4), np.float32)).shape == (0, 3)
    assert img.probabilities(np.zeros((0, 1, 4, 4), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError, match=r"\[N, 1, 4, 4\]"):
        img.logits(np.zeros((2, 16), np.float32))


def test_rewrite_replaces_a_model(tmp_path: Path) -> None:
    write_onnx_model(tmp_path, "m", tabular_onnx(), ["no", "yes"], [3])
    write_onnx_model(tmp_path, "m", tabular_onnx(b=np.ones(2, np.float32)), ["n", "y"], [3])
    model = OnnxModel.load(tmp_path, "m")
    assert model.classes == ["n", "y"]
    np.testing.assert_allclose(model.logits(np.zeros((1, 3), np.float32)), [[1.0, 1.0]])
    assert len(list(tmp_path.iterdir())) == 2


def test_mlp_weights_expose_input_shape() -> None:
    mlp = _tiny_mlp()
    assert mlp.input_shape == (4,) and mlp.platform == "numpy-mlp"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes": ["a", "b", "c"]}, r"output shape \[2, 2\]"),
        ({"input_shape": [4]}, r"graph input shape"),
        ({"input_shape": [3, 1]}, r"graph input shape"),
        ({"classes": ["only"]}, r"at least 2"),
        ({"classes": ["a", "a"]}, r"distinct"),
        ({"input_shape": [0]}, r"positive ints"),
        ({"feature_names": ["a", "b"]}, r"2 feature_names need input_shape \[2\]"),
        ({"name": "../evil"}, r"invalid model name"),
        ({"onnx_bytes": b"not a model"}, r"onnxruntime cannot load"),
        ({"onnx_bytes": image_onnx(batch=1), "input_shape": [1, 4, 4]}, r"batch axis is fixed"),
    ],
)
def test_write_rejects_inconsistent_models(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    args: dict[str, object] = {
        "directory": tmp_path,
        "name": "m",
        "onnx_bytes": tabular_onnx(),
        "classes": ["no", "yes"],
        "input_shape": [3],
    } | kwargs
    with pytest.raises(OnnxModelError, match=match):
        write_onnx_model(**args)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_load_errors_are_typed_and_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "orphan.onnx").write_bytes(tabular_onnx())
    with pytest.raises(OnnxModelError, match=r"orphan\.json: metadata file missing"):
        load_model_dir(tmp_path)
    (tmp_path / "orphan.json").write_text('{"classes": ["no", "yes"], "input_shape": [5]}')
    with pytest.raises(OnnxModelError, match=r"orphan\.onnx: graph input shape"):
        load_model_dir(tmp_path)
    (tmp_path / "orphan.json").write_text("{not json")
    with pytest.raises(OnnxModelError, match=r"unreadable JSON"):
        load_model_dir(tmp_path)
    (tmp_path / "orphan.json").write_text('{"classes": ["no", "yes"]}')
    with pytest.raises(OnnxModelError, match=r"'input_shape'"):
        load_model_dir(tmp_path)
    with pytest.raises(OnnxModelError, match=r"does not exist"):
        load_model_dir(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_model_dir(empty) == {}


# --- several models over HTTP ---------------------------------------------------------------


def test_metadata_of_each_model(client: httpx.Client) -> None:
    tab = client.get("/v2/models/tab").json()
    assert tab["platform"] == "onnxruntime"
    assert tab["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert tab["parameters"] == {"feature_names": TAB_FEATURES, "classes": ["no", "yes"]}
    img = client.get("/v2/models/img").json()
    assert img["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1, 4, 4]}]
    assert {o["name"]: o["shape"] for o in img["outputs"]} == {
        "logits": [-1, 3],
        "probabilities": [-1, 3],
    }
    assert img["parameters"] == {"feature_names": None, "classes": IMG_CLASSES}
    assert client.get("/v2/models/img/ready").json() == {"name": "img", "ready": True}
    assert client.get("/v2/models/nope").status_code == 404
    assert client.get("/v2/models/nope/ready").status_code == 404


@pytest.mark.parametrize("n", [1, 7])
def test_infer_both_models_match_numpy(client: httpx.Client, n: int) -> None:
    x = RNG.normal(size=(n, 3)).astype(np.float32)
    res = client.post("/v2/models/tab/infer", json=_body(x, ["logits", "probabilities"]))
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["model_name"], body["id"]) == ("tab", "r1")
    logits, probs = body["outputs"]
    assert (logits["name"], logits["shape"], probs["shape"]) == ("logits", [n, 2], [n, 2])
    expected = x @ TAB_W + TAB_B
    np.testing.assert_allclose(np.reshape(logits["data"], (n, 2)), expected, atol=1e-5)
    np.testing.assert_allclose(np.reshape(probs["data"], (n, 2)), _softmax(expected), atol=1e-6)

    images = RNG.normal(size=(n, 1, 4, 4)).astype(np.float32)
    res = client.post("/v2/models/img/versions/1/infer", json=_body(images, ["probabilities"]))
    assert res.status_code == 200, res.text
    (out,) = res.json()["outputs"]
    assert (out["name"], out["shape"]) == ("probabilities", [n, 3])
    expected = _softmax(images.reshape(n, 16) @ IMG_W)
    np.testing.assert_allclose(np.reshape(out["data"], (n, 3)), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "shape"),
    [("img", [2, 16]), ("img", [2, 1, 4, 5]), ("img", [1, 4, 4]), ("tab", [2, 1, 3])],
)
def test_wrong_shape_is_400(client: httpx.Client, model: str, shape: list[int]) -> None:
    x = np.zeros(shape, dtype=np.float32)
    res = client.post(f"/v2/models/{model}/infer", json=_body(x))
    assert res.status_code == 400
    assert "input shape must be [N, " in res.json()["error"]


def test_unknown_model_is_404(client: httpx.Client) -> None:
    res = client.post("/v2/models/nope/infer", json=_body(np.zeros((1, 3), np.float32)))
    assert res.status_code == 404 and "not found" in res.json()["error"]


def _tiny_mlp() -> MlpWeights:
    rng = np.random.default_rng(1)
    return MlpWeights(
        weights=[
            rng.normal(size=(4, 5)).astype(np.float32),
            rng.normal(size=(5, 1)).astype(np.float32),
        ],
        biases=[np.zeros(5, np.float32), np.zeros(1, np.float32)],
        mean=np.zeros(4, np.float32),
        std=np.ones(4, np.float32),
        feature_names=["p", "q", "r", "s"],
    )


def test_numpy_and_onnx_models_in_one_app(models_dir: Path) -> None:
    mlp = _tiny_mlp()
    models = {"mlp": mlp, "img": OnnxModel.load(models_dir, "img")}
    with running_server(create_app(models)) as url, httpx.Client(base_url=url) as c:
        meta = c.get("/v2/models/mlp").json()
        assert (meta["platform"], meta["inputs"][0]["shape"]) == ("numpy-mlp", [-1, 4])
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        got = c.post("/v2/models/mlp/infer", json=_body(x)).json()["outputs"][0]["data"]
        np.testing.assert_allclose(np.reshape(got, (2, 2)), mlp.logits(x), atol=1e-6)
        assert c.get("/v2/models/img").json()["inputs"][0]["shape"] == [-1, 1, 4, 4]
        assert c.get("/v2/models/compas").status_code == 404  # `name` unused with a mapping


def test_create_app_rejects_empty_mapping() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        create_app({})


def test_parse_input_accepts_n_d_shapes_and_the_old_int_form() -> None:
    body = _body(np.ones((2, 1, 4, 4), np.float32))
    assert _parse_input(body, (1, 4, 4)).shape == (2, 1, 4, 4)
    assert _parse_input(_body(np.ones((3, 7), np.float32)), 7).shape == (3, 7)
    assert _parse_input(_body(np.ones((0, 7), np.float32)), (7,)).shape == (0, 7)


# --- the CLI and the no-torch promise -------------------------------------------------------


def test_serve_dir_on_empty_dir_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve-dir", "--models-dir", str(tmp_path), "--port", "1"])
    assert result.exit_code == 1
    assert f"error: no models in {tmp_path}" in result.output
    result = CliRunner().invoke(cli, ["serve-dir", "--models-dir", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "does not exist" in result.output


def test_serve_dir_serves_every_model(models_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "blackbox", "serve-dir", "--models-dir", str(models_dir), "--port", str(port)]
    with launched(args, f"{url}/v2/health/ready", "test-blackbox-serve-dir"):
        for name, shape in (("tab", [-1, 3]), ("img", [-1, 1, 4, 4])):
            assert httpx.get(f"{url}/v2/models/{name}").json()["inputs"][0]["shape"] == shape
        x = np.ones((1, 1, 4, 4), np.float32)
        res = httpx.post(f"{url}/v2/models/img/infer", json=_body(x), timeout=5.0)
        np.testing.assert_allclose(
            np.reshape(res.json()["outputs"][0]["data"], (1, 3)),
            x.reshape(1, 16) @ IMG_W,
            atol=1e-5,
        )


def test_server_modules_do_not_import_torch() -> None:
    code = (
        "import sys, blackbox.server, blackbox.onnx_model, blackbox.__main__\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
