"""A patch is refused at load time unless it honours the ONNX patch contract."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from bench.onnx_patches import mlp_to_onnx
from service.errors import PatchFailed, PatchLoadError
from service.registry.models import PatchManifest
from service.runtime import providers
from service.runtime.patch_session import PatchSession
from service.runtime.providers import CPU, CUDA, choose_providers, place
from service.runtime.stack import build_session
from service.settings import ModelConfig, RuntimeSettings


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
    image = {"input_shape": [3, 32, 32], "min_elements": 256}
    assert choose_providers(True, False, **image) == [CPU]
    assert choose_providers(False, True, **image) == [CPU]


MIN = RuntimeSettings().gpu_min_input_elements


@pytest.mark.parametrize(
    ("cuda", "use_gpu", "allow_gpu", "shape", "min_elements", "expected"),
    [
        (True, True, True, [3, 32, 32], MIN, [CUDA, CPU]),  # CIFAR-sized image: heavy
        (True, True, True, [1, 28, 28], MIN, [CUDA, CPU]),  # MNIST: 784 elements
        (True, True, True, [7], MIN, [CPU]),  # a tabular row: tiny MLP stays on the CPU
        (True, True, True, [200], MIN, [CPU]),
        (True, True, True, [16, 16], 256, [CUDA, CPU]),  # exactly at the threshold
        (True, True, True, [15, 17], 256, [CPU]),  # one under it (255)
        (True, True, True, [7], 0, [CUDA, CPU]),  # knob at 0: every allowed patch on CUDA
        (False, True, True, [3, 32, 32], MIN, [CPU]),  # no CUDA on the machine
        (True, False, True, [3, 32, 32], MIN, [CPU]),  # the gateway says no
        (True, True, False, [3, 32, 32], MIN, [CPU]),  # the manifest says no
    ],
)
def test_provider_policy(
    cuda: bool,
    use_gpu: bool,
    allow_gpu: bool,
    shape: list[int],
    min_elements: int,
    expected: list[str],
) -> None:
    got = place(
        cuda_available=cuda,
        use_gpu=use_gpu,
        allow_gpu=allow_gpu,
        input_shape=shape,
        min_elements=min_elements,
    )
    assert got == expected


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime reports a CUDA provider, as onnxruntime-gpu does on a GPU machine."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


@pytest.mark.usefixtures("fake_cuda")
def test_choose_providers_asks_onnx_runtime_for_cuda() -> None:
    assert providers.ort.get_available_providers() == [CUDA, CPU]
    assert choose_providers(True, True, input_shape=[3, 32, 32], min_elements=MIN) == [CUDA, CPU]
    assert choose_providers(True, True, input_shape=[3], min_elements=MIN) == [CPU]


@pytest.mark.usefixtures("fake_cuda")
def test_a_tabular_patch_is_built_on_the_cpu_provider_even_when_cuda_is_there() -> None:
    model = ModelConfig.model_validate(
        {
            "name": "m",
            "upstream": {"url": "http://127.0.0.1:1/v2/models/m/infer"},
            "classes": ["no", "yes"],
            "input": {"shape": [3]},
        }
    )
    manifest = PatchManifest(
        kind="custom",
        model="m",
        classes=["no", "yes"],
        input_shape=[3],
        name="tabular",
        version=1,
        sha256="0" * 64,
        size_bytes=1,
        created_at=datetime.now(UTC),
    )
    patch = build_session(manifest, small_mlp(), model, RuntimeSettings(use_gpu=True))
    assert patch.providers == [CPU]
    assert not patch.on_cuda and not patch.uses_io_binding


def test_io_binding_matches_run_on_the_cpu_provider() -> None:
    """The CUDA path's binding code, exercised on the CPU provider: same answers as ``run``."""
    bound, plain = session(small_mlp(), io_binding=True), session(small_mlp())
    assert bound.uses_io_binding and not plain.uses_io_binding
    bound.warm()
    x = np.random.default_rng(3).standard_normal((17, 3)).astype(np.float32)
    for rows in (x[:1], x, x[::2]):  # x[::2] is not contiguous: the binding needs a copy
        out = bound.run(rows)
        assert out.shape == (len(rows), 2) and out.dtype == np.float32
        np.testing.assert_array_equal(out, plain.run(rows))


@pytest.mark.parametrize("x", [np.ones((2, 4), np.float32), np.ones((2, 3), np.float64)])
def test_io_binding_failure_is_a_typed_patch_failure(x: np.ndarray) -> None:
    patch = session(small_mlp(), io_binding=True)
    with pytest.raises(PatchFailed):
        patch.run(x)


@pytest.mark.skipif(
    CUDA not in ort.get_available_providers(),
    reason="CUDA provider absent: onnxruntime-gpu and a GPU needed",
)
def test_on_cuda_the_session_binds_io_and_answers_as_the_cpu_provider_does() -> None:
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    on_gpu = session(small_mlp(), providers=[CUDA, CPU])
    assert on_gpu.on_cuda and on_gpu.uses_io_binding
    on_gpu.warm()
    x = np.random.default_rng(1).standard_normal((9, 3)).astype(np.float32)
    np.testing.assert_allclose(on_gpu.run(x), session(small_mlp()).run(x), atol=1e-5)
