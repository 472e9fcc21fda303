"""Tabular patch net: preprocessing fitted on the calibration rows, then a ReLU MLP.

The gateway feeds a patch exactly the black box's input row, so scaling and one-hot encoding
live inside the exported graph (as constant buffers) and never in gateway code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

Role = Literal["continuous", "categorical"]

_STD_FLOOR = 1e-6


def column_role(col: np.ndarray, max_categories: int) -> Role:
    """Integer-valued columns with 3..max_categories levels are categorical.

    Binary columns stay continuous: standardising a 0/1 flag loses nothing, and two one-hot
    slots would only add a redundant input. Wide integer columns (ages, counts) are ordinal.
    """
    if not np.all(col == np.round(col)):
        return "continuous"
    return "categorical" if 3 <= np.unique(col).size <= max_categories else "continuous"


def _as_matrix(x_fit: np.ndarray) -> np.ndarray:
    x = np.asarray(x_fit, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"tabular x_fit must be [N >= 1, F >= 1], got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("tabular x_fit contains NaN or infinite values")
    return x


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std in float64, stored as float32; a (near-)constant column gets std 1 so it
    maps to a finite constant instead of dividing by ~0."""
    mean = x.astype(np.float64).mean(axis=0)
    std = x.astype(np.float64).std(axis=0)
    std = np.where(std > _STD_FLOOR, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


class TabularPreprocess(nn.Module):
    """Standardise continuous columns and one-hot encode categorical ones, in-graph.

    Output columns: the continuous features (in input order), then one slot per (categorical
    column, calibration level). All categorical slots are one vectorised comparison
    ``x[:, cat_src] == cat_vocab``, i.e. one Gather + Equal + Cast in ONNX. A level never seen
    in calibration matches no slot and encodes as all zeros: the MLP then falls back to the
    other features instead of extrapolating along an arbitrary ordinal axis.
    """

    def __init__(self, x_fit: np.ndarray, max_categories: int = 12) -> None:
        super().__init__()
        x = _as_matrix(x_fit)
        self.roles: list[Role] = [column_role(x[:, j], max_categories) for j in range(x.shape[1])]
        cont = [j for j, r in enumerate(self.roles) if r == "continuous"]
        cats = [j for j, r in enumerate(self.roles) if r == "categorical"]
        vocabs = [np.unique(x[:, j]) for j in cats]
        self.vocab_sizes: dict[int, int] = {j: v.size for j, v in zip(cats, vocabs, strict=True)}
        mean, std = _moments(x[:, cont])
        src = np.repeat(np.asarray(cats, dtype=np.int64), [v.size for v in vocabs])
        flat_vocab = np.concatenate(vocabs) if vocabs else np.zeros(0, np.float32)
        self.register_buffer("cont_idx", torch.tensor(cont, dtype=torch.long))
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))
        self.register_buffer("cat_src", torch.from_numpy(src))
        self.register_buffer("cat_vocab", torch.from_numpy(flat_vocab.astype(np.float32)))
        # Plain bools, not buffer sizes: the tracer must see a fixed branch structure.
        self.has_continuous, self.has_categorical = bool(cont), bool(cats)
        self.n_features = x.shape[1]
        self.out_features = len(cont) + int(src.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        if self.has_continuous:
            parts.append((x.index_select(1, self.cont_idx) - self.mean) / self.std)
        if self.has_categorical:
            parts.append((x.index_select(1, self.cat_src) == self.cat_vocab).to(x.dtype))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def describe(self) -> dict[str, object]:
        """JSON-ready summary for the patch manifest: what each input column became."""
        columns: list[dict[str, object]] = []
        for j, role in enumerate(self.roles):
            entry: dict[str, object] = {"index": j, "role": role}
            if role == "categorical":
                entry["vocab_size"] = self.vocab_sizes[j]
            columns.append(entry)
        return {
            "n_features": self.n_features,
            "out_features": self.out_features,
            "columns": columns,
        }


class TabularMLP(nn.Module):
    """``TabularPreprocess`` → (Linear, ReLU)×len(hidden) → Linear(K) → log-softmax."""

    def __init__(
        self, preprocess: TabularPreprocess, hidden: Sequence[int], num_classes: int
    ) -> None:
        super().__init__()
        self.preprocess = preprocess
        layers: list[nn.Module] = []
        width = preprocess.out_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.body(self.preprocess(x)), dim=-1)
