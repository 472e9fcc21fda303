"""Torch patch nets G: build one for a model's input shape, fit it to the Eraser's targets.

Every net maps float32 [N, *input_shape] to log-softmax [N, K], the ONNX patch contract, so
``patch_training.export.torch_onnx.export_patch`` can serialise any of them unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from patch_training.nets.ensemble import FoldEnsemble, ShiftedPatch
from patch_training.nets.fit import FitConfig, FitResult, fit_to_targets, predict_log
from patch_training.nets.tabular import TabularMLP, TabularPreprocess
from patch_training.nets.torch_env import limit_threads, resolve_device, seed_everything
from patch_training.nets.vision import MIN_SIDE, ResNet18, SmallCNN
from service.jobs.spec import Arch

__all__ = [
    "FitConfig",
    "FitResult",
    "FoldEnsemble",
    "ResNet18",
    "ShiftedPatch",
    "SmallCNN",
    "TabularMLP",
    "TabularPreprocess",
    "build_patch_net",
    "fit_to_targets",
    "limit_threads",
    "predict_log",
    "resolve_device",
    "seed_everything",
]


def _resolve_arch(shape: tuple[int, ...], arch: Arch) -> Arch:
    """``auto`` picks by rank; any arch, picked or explicit, must fit the shape it needs."""
    if arch == "auto":
        arch = "mlp" if len(shape) == 1 else "cnn"
    if arch == "mlp":
        if len(shape) != 1:
            raise ValueError(f"arch 'mlp' needs a 1-D input shape [F], got {list(shape)}")
    elif arch in ("cnn", "resnet18"):
        if len(shape) != 3 or min(shape[1:]) < MIN_SIDE:
            raise ValueError(
                f"arch {arch!r} needs an image shape [C, H, W] with H, W >= {MIN_SIDE}, "
                f"got {list(shape)}"
            )
    else:
        raise ValueError(f"unknown arch {arch!r}: expected 'auto', 'mlp', 'cnn' or 'resnet18'")
    return arch


def build_patch_net(
    input_shape: Sequence[int],
    num_classes: int,
    x_fit: np.ndarray,
    arch: Arch,
    hidden: Sequence[int],
    max_categories: int = 12,
) -> nn.Module:
    """A fresh (untrained) patch net; ``x_fit`` fixes the tabular preprocessing constants.

    Weight initialisation draws from torch's global generator: call ``seed_everything`` first
    for a reproducible patch. ``hidden`` and ``max_categories`` only apply to ``mlp`` (the
    job spec sets ``arch`` and ``hidden``).
    """
    shape = tuple(int(d) for d in input_shape)
    if num_classes < 2 or not shape or min(shape) < 1:
        raise ValueError(f"need num_classes >= 2 and positive dims, got {num_classes}, {shape}")
    if np.shape(x_fit)[1:] != shape:
        raise ValueError(f"x_fit rows have shape {np.shape(x_fit)[1:]}, expected {shape}")
    chosen = _resolve_arch(shape, arch)
    if chosen == "mlp":
        return TabularMLP(TabularPreprocess(x_fit, max_categories), hidden, num_classes)
    if chosen == "cnn":
        return SmallCNN(shape[0], num_classes)
    return ResNet18(shape[0], num_classes)
