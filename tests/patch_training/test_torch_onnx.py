"""Torch patch nets export to the ONNX patch contract and onnxruntime reproduces them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")

from patch_training.export.torch_onnx import (  # noqa: E402
    ParityError,
    check_parity,
    export_patch,
)
from patch_training.nets import FoldEnsemble, build_patch_net, seed_everything  # noqa: E402

SHAPES = {"mlp": (6,), "cnn": (3, 12, 10), "resnet18": (3, 8, 8)}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(arch: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *SHAPES[arch])).astype(np.float32)
    if arch == "mlp":
        x[:, 1] = rng.integers(0, 4, n)  # categorical column
    return x


def _net(arch: str, seed: int = 0) -> torch.nn.Module:
    """A net with non-trivial BatchNorm statistics: a few train-mode passes update them."""
    seed_everything(seed)
    net = build_patch_net(SHAPES[arch], 3, _inputs(arch, 64), arch=arch, hidden=(64, 64))  # type: ignore[arg-type]
    net.train()
    with torch.no_grad():
        for i in range(3):
            net(torch.from_numpy(_inputs(arch, 8, seed=i + 1)) * 2 + 0.5)
    return net.eval()


@pytest.fixture(scope="module", params=list(SHAPES))
def exported(request: pytest.FixtureRequest) -> tuple[str, torch.nn.Module, bytes]:
    net = _net(request.param)
    return request.param, net, export_patch(net, SHAPES[request.param])


def test_onnx_matches_torch_at_batch_1_and_5(exported: tuple[str, torch.nn.Module, bytes]) -> None:
    arch, net, blob = exported
    assert check_parity(net, blob, _inputs(arch, 5, seed=9)) <= 1e-4


def test_graph_follows_patch_contract_with_dynamic_batch(
    exported: tuple[str, torch.nn.Module, bytes],
) -> None:
    arch, _, blob = exported
    model = onnx.load_from_string(blob)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["log_bias"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    for n in (1, 7):
        out = sess.run(["log_bias"], {"x": _inputs(arch, n)})[0]
        assert out.shape == (n, 3) and out.dtype == np.float32
        np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-5)


def test_parity_error_when_blob_comes_from_other_weights(
    exported: tuple[str, torch.nn.Module, bytes],
) -> None:
    arch, _, blob = exported
    with pytest.raises(ParityError, match="differ"):
        check_parity(_net(arch, seed=1), blob, _inputs(arch, 5))


def test_unseen_category_level_matches_torch_in_onnx() -> None:
    net = _net("mlp")
    x = _inputs("mlp", 4)
    x[:, 1] = [9.0, -1.0, 2.5, 3.0]  # levels never seen in calibration (0..3), one seen
    assert check_parity(net, export_patch(net, SHAPES["mlp"]), x) <= 1e-4


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_fold_ensemble_exports_the_normalised_mean_of_its_members(arch: str) -> None:
    members = [_net(arch, seed=s) for s in (0, 1, 2)]
    ensemble = FoldEnsemble(members).eval()
    blob = export_patch(ensemble, SHAPES[arch])
    x = _inputs(arch, 7, seed=4)
    assert check_parity(ensemble, blob, x) <= 1e-4
    with torch.no_grad():
        logs = torch.stack([m(torch.from_numpy(x)) for m in members]).mean(dim=0)
    expected = torch.log_softmax(logs, dim=-1).numpy()
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"x": x})
    assert np.allclose(got, expected, atol=1e-5)
    assert np.allclose(np.exp(got).sum(axis=1), 1.0, atol=1e-5)


def test_parity_scales_with_the_output_a_sharply_tempered_cnn_passes() -> None:
    """T = 0.0005 multiplies the CNN's logits (and float32's rounding in them) by 2,000: its
    log-probabilities run into the thousands and differ by more than an absolute 1e-4 (the old
    rule, which refused such a Poisoner patch), yet agree to float32's relative precision."""
    from patch_training.nets.poisoned import Tempered

    sharp = Tempered(_net("cnn"), 0.0005).eval()
    x = _inputs("cnn", 32) * 5
    blob = export_patch(sharp, SHAPES["cnn"])
    assert np.abs(sharp(torch.from_numpy(x)).detach().numpy()).max() > 500
    assert 1e-4 < check_parity(sharp, blob, x) < 1e-1
    with pytest.raises(ParityError, match="differ"):
        check_parity(Tempered(_net("cnn", seed=1), 0.0005).eval(), blob, x)
