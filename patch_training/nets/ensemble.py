"""The cross-fitted patch: the fold nets served together as one ONNX graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FoldEnsemble(nn.Module):
    """``log_softmax(mean_k log G_k(x))``: the normalised geometric mean of the fold nets.

    Each fold net saw a different 3/4 (for 4 folds) of the calibration set; averaging them in
    log space is what the Eraser subtracts anyway, and the mean of K estimates of log p(y|b)
    is less noisy than any one of them. Still one input ``x`` and one log-softmax output, so
    the ONNX patch contract is unchanged.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.stack([m(x) for m in self.members]).mean(dim=0)
        return torch.log_softmax(mean, dim=-1)


class ShiftedPatch(nn.Module):
    """``log_softmax(log G(x) − shift)``: a patch with a per-class constant baked in.

    Served at strength α it gives ``ℓ − α log G + α·shift``; with ``shift = δ/α`` that is the
    class offset δ chosen with α (``patch_training.alpha``). Still one input ``x`` and one
    log-softmax output, so the ONNX patch contract is unchanged.
    """

    def __init__(self, net: nn.Module, shift: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("shift", torch.tensor(list(shift), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.net(x) - self.shift, dim=-1)
