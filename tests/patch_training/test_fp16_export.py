"""The fp16 export option: float16 weights, float32 I/O, and the parity gate against fp32."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import pytest
from onnx import TensorProto

torch = pytest.importorskip("torch")

from bench.onnx_patches import mlp_to_onnx  # noqa: E402
from patch_training.export.fp16 import (  # noqa: E402
    FP16_ATOL,
    check_fp16_parity,
    export_fp16,
    to_fp16,
)
from patch_training.export.torch_onnx import ParityError, export_patch  # noqa: E402
from patch_training.nets import build_patch_net, seed_everything  # noqa: E402
from service.runtime.patch_session import PatchSession  # noqa: E402

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *SHAPE)).astype(np.float32)


def _cnn_blob(seed: int = 0) -> bytes:
    """The small CNN, with BatchNorm statistics moved off their defaults by train-mode passes."""
    seed_everything(seed)
    net = build_patch_net(SHAPE, 3, _rows(32), arch="cnn", hidden=(64, 64))
    net.train()
    with torch.no_grad():
        for i in range(3):
            net(torch.from_numpy(_rows(8, seed=i + 1)) * 3 - 1)
    return export_patch(net.eval(), SHAPE)


@pytest.fixture(scope="module")
def cnn() -> bytes:
    return _cnn_blob()


def test_fp16_export_halves_the_weights_and_keeps_float32_io(cnn: bytes) -> None:
    half = onnx.load_from_string(to_fp16(cnn))
    inits = {t.data_type for t in half.graph.initializer}
    assert TensorProto.FLOAT16 in inits and TensorProto.FLOAT not in inits
    io = [*half.graph.input, *half.graph.output]
    assert [v.name for v in io] == ["x", "log_bias"]
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in io)
    assert len(half.SerializeToString()) < 0.6 * len(cnn)


def test_small_cnn_fp16_matches_fp32_within_the_stated_tolerance(cnn: bytes) -> None:
    x = _rows(40, seed=7)
    half, diff = export_fp16(cnn, x)
    assert 0 < diff <= FP16_ATOL  # rounded weights: close, and not the same graph
    assert check_fp16_parity(cnn, half, x) == diff


def test_the_gateway_serves_an_fp16_patch_like_any_other(cnn: bytes) -> None:
    """Float32 in, float32 log-normalised rows out: the patch contract holds unchanged."""
    half, _ = export_fp16(cnn, _rows(8))
    kwargs = {"input_name": "x", "input_shape": list(SHAPE), "num_classes": 3}
    served = PatchSession(half, providers=["CPUExecutionProvider"], **kwargs)  # type: ignore[arg-type]
    served.warm()
    x = _rows(5, seed=3)
    out = served.run(x)
    assert out.dtype == np.float32 and out.shape == (5, 3)
    reference = PatchSession(cnn, providers=["CPUExecutionProvider"], **kwargs).run(x)  # type: ignore[arg-type]
    assert np.abs(out - reference).max() <= FP16_ATOL


def test_parity_gate_refuses_an_fp16_graph_of_other_weights(cnn: bytes) -> None:
    with pytest.raises(ParityError, match="differs from the fp32 export"):
        check_fp16_parity(cnn, to_fp16(_cnn_blob(seed=1)), _rows(16))


def test_parity_gate_refuses_weights_beyond_float16_range() -> None:
    """A ReLU MLP whose first layer is scaled by 2e4 and second by 1/2e4 computes the same
    function in float32; float16 clamps the first layer to 1e4, halving every logit."""
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((4, 8)), rng.standard_normal((8, 3)) * 3
    scaled = mlp_to_onnx([w1 * 2e4, w2 / 2e4], [np.zeros(8), np.zeros(3)], None, None)
    plain = mlp_to_onnx([w1, w2], [np.zeros(8), np.zeros(3)], None, None)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    assert check_fp16_parity(plain, scaled, x, atol=1.0) < 1e-3  # the same function in fp32...
    with pytest.raises(ParityError, match="differs"):
        export_fp16(scaled, x)  # ...but not once its weights are float16


def test_parity_gate_needs_rows(cnn: bytes) -> None:
    with pytest.raises(ParityError, match="no calibration rows"):
        export_fp16(cnn, _rows(0))
