"""Patch ONNX graphs built directly with ``onnx.helper``, for benchmarks and tests.

Why not torch.onnx: the performance benchmark and the gateway's tests build small patches
without PyTorch. A ReLU MLP is a few Gemm nodes, so writing the graph by hand is short, exact
and fast. Every graph follows the patch contract (``service.patch_contract``): input ``x``
float32 [N, F] (dynamic N), output ``log_bias`` float32 [N, K], each row a log-softmax. The
product's own patches come from ``patch_training.export.torch_onnx``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.patch_contract import PATCH_INPUT, PATCH_OUTPUT


def two_class_head(w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn a single logistic unit (sklearn's binary head) into 2-class logits ``[0, η]``;
    ``log_softmax([0, η])`` is ``(log(1-σ(η)), log σ(η))``, exactly the binary probabilities."""
    w = np.asarray(w, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32).reshape(-1)
    if w.shape[1] != 1 or b.shape != (1,):
        raise ValueError(f"expected a single-output head, got W {w.shape}, b {b.shape}")
    return np.hstack([np.zeros_like(w), w]), np.concatenate([np.zeros(1, np.float32), b])


def _check_layers(weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> None:
    if not weights or len(weights) != len(biases):
        raise ValueError("need one bias per weight matrix and at least one layer")
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if w.ndim != 2 or np.shape(b) != (w.shape[1],):
            raise ValueError(f"layer {i}: W {w.shape} and b {np.shape(b)} do not match")
        if i and weights[i - 1].shape[1] != w.shape[0]:
            raise ValueError(f"layer {i}: input {w.shape[0]} != previous output")


def mlp_to_onnx(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    mean: np.ndarray | None,
    std: np.ndarray | None,
    opset: int = 17,
) -> bytes:
    """Serialise a ReLU MLP (weights in sklearn ``coefs_`` layout [in, out]) as a patch graph.

    ``(x - mean) / std`` is inside the graph so the gateway never hard-codes scaling. A last layer
    with one output is converted with ``two_class_head`` so the output is always [N, K >= 2].
    """
    ws = [np.asarray(w, dtype=np.float32) for w in weights]
    bs = [np.asarray(b, dtype=np.float32).reshape(-1) for b in biases]
    _check_layers(ws, bs)
    if ws[-1].shape[1] == 1:
        ws[-1], bs[-1] = two_class_head(ws[-1], bs[-1])
    n_in, n_out = ws[0].shape[0], ws[-1].shape[1]
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    cur = PATCH_INPUT
    if mean is not None:
        inits.append(numpy_helper.from_array(_vec(mean, n_in, "mean"), "mean"))
        nodes.append(helper.make_node("Sub", [cur, "mean"], ["x_centered"]))
        cur = "x_centered"
    if std is not None:
        safe = np.where(np.abs(_vec(std, n_in, "std")) > 1e-12, _vec(std, n_in, "std"), 1.0)
        inits.append(numpy_helper.from_array(safe.astype(np.float32), "std"))
        nodes.append(helper.make_node("Div", [cur, "std"], ["x_scaled"]))
        cur = "x_scaled"
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"B{i}"], [f"z{i}"]))
        cur = f"z{i}"
        if i < len(ws) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"h{i}"]))
            cur = f"h{i}"
    return patch_graph_bytes(nodes, inits, cur, n_in, n_out, "mlp_patch", opset)


def patch_graph_bytes(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    logits: str,
    n_in: int,
    n_out: int,
    name: str,
    opset: int = 17,
) -> bytes:
    """Close a graph over input ``x`` [N, n_in] with ``log_bias = LogSoftmax(logits)`` and check
    it: every hand-built patch ends the same way, so the contract is written once."""
    nodes = [*nodes, helper.make_node("LogSoftmax", [logits], [PATCH_OUTPUT], axis=-1)]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(PATCH_INPUT, TensorProto.FLOAT, ["N", n_in])],
        [helper.make_tensor_value_info(PATCH_OUTPUT, TensorProto.FLOAT, ["N", n_out])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="eraser-gateway"
    )
    model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime builds too
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _vec(v: np.ndarray, n: int, what: str) -> np.ndarray:
    out = np.asarray(v, dtype=np.float32).reshape(-1)
    if out.shape != (n,):
        raise ValueError(f"{what} has shape {out.shape}, expected ({n},)")
    return out


def _soft_to_weighted(
    x: np.ndarray, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft targets as a weighted hard-label set: row x repeated K times with label k and weight
    p_k. Weighted cross-entropy on it equals cross-entropy (hence KL, up to a constant) to p."""
    n, k = probs.shape
    xs = np.repeat(x, k, axis=0)
    ys = np.tile(np.arange(k), n)
    return xs, ys, probs.reshape(-1).astype(np.float64)


def fit_mlp_patch(
    x: np.ndarray,
    target: np.ndarray,
    hidden: tuple[int, ...] = (16,),
    seed: int = 0,
    max_iter: int = 500,
    solver: str = "lbfgs",
) -> bytes:
    """Fit an sklearn MLPClassifier and export it as a patch.

    ``target`` is either int labels [N] (classes 0..K-1, all present) or soft targets [N, K]
    (rows summing to 1, e.g. the Eraser's distilled t(x)). Standardisation is learned on ``x``
    and embedded in the graph. Full-batch L-BFGS is the default: calibration sets are small,
    and with soft targets the loss is flat near its floor, where Adam stops on ``tol`` while the
    probabilities are still visibly off (≈0.1 on a toy problem vs <0.005 with L-BFGS).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x = np.asarray(x, dtype=np.float32)
    target = np.asarray(target)
    if target.ndim == 2:
        xs, ys, sw = _soft_to_weighted(x, target)
    elif target.ndim == 1:
        xs, ys, sw = x, target.astype(np.int64), None
        if not np.array_equal(np.unique(ys), np.arange(ys.max() + 1)):
            raise ValueError("labels must be 0..K-1 with every class present")
    else:
        raise ValueError(f"target must be labels [N] or probabilities [N, K], got {target.shape}")
    mean = x.mean(axis=0)
    std = np.where(x.std(axis=0) > 1e-6, x.std(axis=0), 1.0).astype(np.float32)
    clf = MLPClassifier(
        hidden_layer_sizes=hidden, solver=solver, max_iter=max_iter, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((xs - mean) / std, ys, sample_weight=sw)
    return mlp_to_onnx(list(clf.coefs_), list(clf.intercepts_), mean, std)
