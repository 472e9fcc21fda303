"""build_patch_net picks the architecture from the input shape and rejects shapes it cannot fit."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from patch_training.nets import (  # noqa: E402
    ResNet18,
    SmallCNN,
    TabularMLP,
    build_patch_net,
    seed_everything,
)

HIDDEN = (64, 64)


def _x(shape: tuple[int, ...], n: int = 4) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize(
    ("shape", "arch", "cls"),
    [((5,), "auto", TabularMLP), ((1, 9, 8), "auto", SmallCNN), ((3, 8, 8), "resnet18", ResNet18)],
)
def test_dispatch_returns_net_emitting_log_softmax_rows(
    shape: tuple[int, ...], arch: str, cls: type
) -> None:
    seed_everything(0)
    net = build_patch_net(shape, 3, _x(shape), arch=arch, hidden=HIDDEN).eval()
    assert isinstance(net, cls)
    with torch.no_grad():
        out = net(torch.from_numpy(_x(shape, n=2)))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.exp().sum(dim=1).numpy(), 1.0, atol=1e-5)


def test_small_cnn_stays_under_100k_parameters() -> None:
    net = build_patch_net((3, 32, 32), 10, _x((3, 32, 32)), arch="auto", hidden=HIDDEN)
    assert sum(p.numel() for p in net.parameters()) < 100_000


@pytest.mark.parametrize(
    ("shape", "arch", "match"),
    [
        ((3, 8, 8), "mlp", "1-D"),
        ((5,), "cnn", r"\[C, H, W\]"),
        ((5,), "resnet18", r"\[C, H, W\]"),
        ((4, 5), "auto", r"\[C, H, W\]"),
        ((3, 7, 8), "cnn", "H, W >= 8"),
        ((5,), "vit", "unknown arch"),
    ],
)
def test_shape_that_does_not_fit_the_arch_is_rejected(
    shape: tuple[int, ...], arch: str, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        build_patch_net(shape, 3, _x(shape), arch=arch, hidden=HIDDEN)  # type: ignore[arg-type]


def test_x_fit_with_other_row_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="x_fit rows"):
        build_patch_net((5,), 3, _x((6,)), arch="auto", hidden=HIDDEN)


def test_single_class_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_patch_net((5,), 1, _x((5,)), arch="auto", hidden=HIDDEN)
