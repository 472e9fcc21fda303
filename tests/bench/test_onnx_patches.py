"""Hand-built MLP patch graphs match a numpy forward and honour the ONNX patch contract."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bench.onnx_patches import fit_mlp_patch, mlp_to_onnx


def _session(blob: bytes) -> ort.InferenceSession:
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"])


def _numpy_forward(
    x: np.ndarray, ws: list[np.ndarray], bs: list[np.ndarray], mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    h = (x.astype(np.float64) - mean) / std
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        h = h @ w + b
        if i < len(ws) - 1:
            h = np.maximum(h, 0.0)
    h -= h.max(axis=1, keepdims=True)
    return h - np.log(np.exp(h).sum(axis=1, keepdims=True))


def _random_mlp(sizes: list[int], seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, 0.5, (a, b)).astype(np.float32) for a, b in pairwise(sizes)]
    bs = [rng.normal(0, 0.1, b).astype(np.float32) for b in sizes[1:]]
    return ws, bs


@pytest.mark.parametrize("n", [1, 33])
def test_onnx_matches_numpy_and_rows_are_log_normalised(n: int) -> None:
    ws, bs = _random_mlp([5, 16, 8, 3])
    rng = np.random.default_rng(1)
    mean = rng.normal(size=5).astype(np.float32)
    std = rng.uniform(0.5, 2.0, size=5).astype(np.float32)
    blob = mlp_to_onnx(ws, bs, mean, std)
    model = onnx.load_from_string(blob)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["log_bias"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = rng.normal(size=(n, 5)).astype(np.float32)
    (out,) = _session(blob).run(["log_bias"], {"x": x})
    assert out.shape == (n, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, _numpy_forward(x, ws, bs, mean, std), atol=1e-5)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-5)


def test_single_logistic_head_becomes_two_class_log_softmax() -> None:
    ws, bs = _random_mlp([4, 6, 1])
    x = np.random.default_rng(2).normal(size=(10, 4)).astype(np.float32)
    (out,) = _session(mlp_to_onnx(ws, bs, None, None)).run(None, {"x": x})
    eta = (np.maximum(x @ ws[0] + bs[0], 0) @ ws[1] + bs[1])[:, 0]
    p = 1.0 / (1.0 + np.exp(-eta.astype(np.float64)))
    np.testing.assert_allclose(np.exp(out), np.stack([1 - p, p], axis=1), atol=1e-5)


def test_mismatched_layers_are_rejected() -> None:
    ws, bs = _random_mlp([4, 6, 2])
    with pytest.raises(ValueError):
        mlp_to_onnx(ws, bs[:1], None, None)
    with pytest.raises(ValueError):
        mlp_to_onnx(ws, bs, np.zeros(3, np.float32), None)


def _toy(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32) * [1.0, 10.0, 0.1] + [0.0, 50.0, 0.0]
    y = (x[:, 0] + (x[:, 1] - 50.0) / 10.0 > 0).astype(np.int64)
    return x.astype(np.float32), y


def test_fit_mlp_patch_from_labels() -> None:
    x, y = _toy()
    (out,) = _session(fit_mlp_patch(x, y, hidden=(8,), seed=0)).run(None, {"x": x})
    assert out.shape == (len(x), 2)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-5)
    assert (out.argmax(axis=1) == y).mean() > 0.9


def test_fit_mlp_patch_from_soft_targets() -> None:
    x, y = _toy()
    probs = np.where(y[:, None] == 1, [[0.3, 0.7]], [[0.8, 0.2]])
    sess = _session(fit_mlp_patch(x, probs, hidden=(8,), seed=0))
    (out,) = sess.run(None, {"x": x[:1]})
    assert out.shape == (1, 2)
    (out,) = sess.run(None, {"x": x})
    assert np.abs(np.exp(out) - probs).mean() < 0.03
