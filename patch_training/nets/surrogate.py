"""FMD's surrogate S of the black box and the unlearning patch built on it.

S = a penultimate representation h(x) (the patch net without its last layer) and a linear top
layer; FMD's maths (``methods.influence``) works on the top layer only. The patch has both
heads on the shared representation: log_softmax(log S(x) − log S'(x)), S' the top layer after
the unlearning step. (Per-row constants cancel, so it equals log_softmax((W − W') h̃(x)).)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from service.jobs.spec import Arch


class Surrogate(nn.Module):
    """``log_softmax(head(features(x)))`` with the penultimate layer exposed."""

    def __init__(self, features: nn.Module, head: nn.Linear, input_rank: int = 1) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.input_rank = input_rank  # axes of one input row ([F]: 1, [C, H, W]: 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.head(self.features(x)), dim=-1)

    def penultimate(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """h(x) as float64 [N, d], in eval mode; ``x`` may have extra leading axes
        (counterfactuals [N, M, *shape] give [N, M, d])."""
        x = np.asarray(x, dtype=np.float32)
        lead = x.shape[: x.ndim - self.input_rank]
        flat = x.reshape(-1, *x.shape[len(lead) :])
        self.eval()
        with torch.no_grad():
            parts = [
                self.features(torch.from_numpy(flat[i : i + batch_size])).double().numpy()
                for i in range(0, len(flat), batch_size)
            ]
        out = np.concatenate(parts) if parts else np.zeros((0, self.head.in_features))
        return out.reshape(*lead, -1)

    def set_head(self, w: np.ndarray) -> None:
        """Set the top layer from W [K, d+1] (the bias is the last column)."""
        set_linear(self.head, w)

    def head_matrix(self) -> np.ndarray:
        """The top layer as W [K, d+1], float64."""
        weight = self.head.weight.detach().double().numpy()
        bias = self.head.bias.detach().double().numpy()
        return np.concatenate([weight, bias[:, None]], axis=1)


def set_linear(layer: nn.Linear, w: np.ndarray) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.asarray(w[:, :-1], dtype=np.float32)))
        layer.bias.copy_(torch.from_numpy(np.asarray(w[:, -1], dtype=np.float32)))


class UnlearnedPatch(nn.Module):
    """``log_softmax(log S(x) − log S'(x))``: S and S' share ``features``; S' is the top layer
    after unlearning. One input, one log-softmax output: the ONNX patch contract."""

    def __init__(self, surrogate: Surrogate, unlearned: np.ndarray) -> None:
        super().__init__()
        self.features = surrogate.features
        self.head = surrogate.head
        k, width = surrogate.head.out_features, surrogate.head.in_features
        self.unlearned_head = nn.Linear(width, k)
        set_linear(self.unlearned_head, unlearned)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        log_s = torch.log_softmax(self.head(h), dim=-1)
        log_s_new = torch.log_softmax(self.unlearned_head(h), dim=-1)
        return torch.log_softmax(log_s - log_s_new, dim=-1)


def build_surrogate(
    input_shape: Sequence[int],
    num_classes: int,
    x_fit: np.ndarray,
    arch: Arch,
    hidden: Sequence[int],
) -> Surrogate:
    """A fresh surrogate: the patch net of ``arch`` split before its last linear layer (the MLP
    after its last hidden ReLU, the small CNN after its global pooling)."""
    from patch_training.nets import SmallCNN, TabularMLP, build_patch_net

    net = build_patch_net(input_shape, num_classes, x_fit, arch=arch, hidden=hidden)
    rank = len(tuple(input_shape))
    if isinstance(net, TabularMLP):
        layers = list(net.body)
        return Surrogate(nn.Sequential(net.preprocess, *layers[:-1]), layers[-1], rank)
    if isinstance(net, SmallCNN):
        return Surrogate(net.features, net.head, rank)
    raise ValueError(f"FMD's surrogate supports arch 'mlp' and 'cnn', not {arch!r}")
