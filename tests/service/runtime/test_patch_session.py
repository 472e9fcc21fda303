"""A patch is refused at load time unless it honours the ONNX patch contract."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from bench.onnx_patches import mlp_to_onnx
from service.errors import PatchFailed, PatchLoadError
from service.runtime.patch_session import PatchSession, choose_providers


def session(blob: bytes, **overrides: object) -> PatchSession:
    kwargs = {
        "input_name": "x",
        "input_shape": [3],
        "num_classes": 2,
        "providers": ["CPUExecutionProvider"],
    } | overrides
    return PatchSession(blob, **kwargs)  # type: ignore[arg-type]


def identity_graph(output_name: str = "log_bias") -> bytes:
    """A graph that passes x through: its rows are not log-normalised."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], [output_name])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def small_mlp(n_in: int = 3, k: int = 2) -> bytes:
    rng = np.random.default_rng(0)
    return mlp_to_onnx([rng.standard_normal((n_in, k))], [np.zeros(k)], None, None)


def test_a_valid_patch_warms_and_runs() -> None:
    patch = session(small_mlp())
    patch.warm()
    out = patch.run(np.ones((5, 3), np.float32))
    assert out.shape == (5, 2)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("blob", "overrides", "reason"),
    [
        (b"\x00garbage", {}, "not a loadable ONNX model"),
        (small_mlp(), {"input_name": "features"}, "no input 'features'"),
        (identity_graph("scores"), {"input_shape": [2]}, "no output 'log_bias'"),
        (small_mlp(k=3), {}, "model needs [N, 2]"),
        (identity_graph(), {"input_shape": [2]}, "not log-normalised"),
        (small_mlp(n_in=4), {}, "fails on a [2, 3] batch"),
    ],
)
def test_contract_violations_are_refused_at_load(blob: bytes, overrides: dict, reason: str) -> None:
    with pytest.raises(PatchLoadError) as info:
        session(blob, **overrides).warm()
    assert reason in info.value.message


def test_a_runtime_failure_is_a_typed_patch_failure() -> None:
    patch = session(small_mlp())
    with pytest.raises(PatchFailed):
        patch.run(np.ones((2, 4), np.float32))


def test_cpu_is_chosen_when_gpu_is_not_allowed() -> None:
    assert choose_providers(use_gpu=True, allow_gpu=False) == ["CPUExecutionProvider"]
    assert choose_providers(use_gpu=False, allow_gpu=True) == ["CPUExecutionProvider"]
