"""The deployed models the benchmark debiases: trained here with PyTorch, served as ONNX files by
the black-box process, never seen by the gateway or the patch trainer except through HTTP.

Two variants, as in the paper (Sec. V, baselines): *vanilla* — cross-entropy on the target;
*unfair* — multi-task, a second head trained to predict the bias attribute from the same
features, so the shared representation encodes it more strongly. Only the target head is served.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from bench.quality.augment import AugmentConfig, augment_digits
from bench.quality.datasets import Table, Task, biased_colours, colourise
from patch_training.export.torch_onnx import trace_to_onnx

Variant = Literal["vanilla", "unfair"]
VARIANTS: tuple[Variant, ...] = ("vanilla", "unfair")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 1e-4


TRAIN_CONFIGS = {
    "compas": TrainConfig(epochs=40, batch_size=128),
    "adult": TrainConfig(epochs=15, batch_size=256),
    "cmnist": TrainConfig(epochs=10, batch_size=64),
}


@dataclass(frozen=True)
class AugmentedTrainConfig:
    """Training on digits augmented and coloured afresh every epoch (``cmnist_aug``): each
    epoch is a new sample of the biased training distribution — every grey training digit
    randomly moved and deformed (``augment``), then given a background colour drawn at the
    task's ρ — so across epochs the model meets the ~1 % colour-conflicting images a larger
    training set would hold. A narrower CNN than ``cmnist``'s, so that many epochs fit in
    about three minutes on two cores; AdamW with a one-cycle learning rate up to ``max_lr``.
    Chosen on validation digits held out of the training split (docs/benchmarks.md)."""

    epochs: int = 150
    batch_size: int = 32
    max_lr: float = 3e-3
    weight_decay: float = 1e-4
    widths: tuple[int, int, int] = (8, 16, 64)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


AUGMENTED_CONFIGS = {"cmnist_aug": AugmentedTrainConfig()}


class DeployedMLP(nn.Module):
    """Standardisation (training-split constants, in the graph) → 64 → 32 → target logits."""

    def __init__(self, x: np.ndarray, n_classes: int, n_bias: int = 0) -> None:
        super().__init__()
        std = x.std(axis=0)
        self.register_buffer("mean", torch.as_tensor(x.mean(axis=0), dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.where(std > 1e-6, std, 1.0),
                                                    dtype=torch.float32))  # fmt: skip
        self.trunk = nn.Sequential(
            nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU()
        )
        self.head = nn.Linear(32, n_classes)
        self.bias_head = nn.Linear(32, n_bias) if n_bias else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk((x - self.mean) / self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DeployedCNN(nn.Module):
    """0–255 pixels scaled in the graph → two conv-BN-ReLU-pool stages → 128 → target logits.

    A flattening head rather than global pooling, so digit *shape* is as easy to learn as the
    background colour: whatever shortcut it takes, it takes because of the data.
    """

    def __init__(
        self, n_classes: int, n_bias: int = 0, widths: tuple[int, int, int] = (32, 64, 128)
    ) -> None:
        super().__init__()
        c1, c2, hidden = widths
        self.trunk = nn.Sequential(
            nn.Conv2d(3, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(hidden, n_classes)
        self.bias_head = nn.Linear(hidden, n_bias) if n_bias else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x / 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def bias_index(task: Task, table: Table) -> np.ndarray:
    """Bias values as indices into ``task.bias_values`` (what the unfair head predicts)."""
    position = {v: i for i, v in enumerate(task.bias_values)}
    return np.array([position[v] for v in table.b], dtype=np.int64)


def build(task: Task, variant: Variant) -> nn.Module:
    n_bias = len(task.bias_values) if variant == "unfair" else 0
    if task.dataset in AUGMENTED_CONFIGS:
        return DeployedCNN(len(task.classes), n_bias, AUGMENTED_CONFIGS[task.dataset].widths)
    if len(task.input_shape) == 3:
        return DeployedCNN(len(task.classes), n_bias)
    return DeployedMLP(task.train.X, len(task.classes), n_bias)


def train(task: Task, variant: Variant, seed: int) -> nn.Module:
    """AdamW on cross-entropy (plus the bias head's for ``unfair``), fixed epochs, seeded."""
    if task.dataset in AUGMENTED_CONFIGS:
        return train_augmented(task, variant, seed, AUGMENTED_CONFIGS[task.dataset])
    torch.manual_seed(seed)
    net = build(task, variant)
    cfg = TRAIN_CONFIGS[task.dataset]
    x = torch.as_tensor(task.train.X, dtype=torch.float32)
    y = torch.as_tensor(task.train.y)
    b = torch.as_tensor(bias_index(task, task.train))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            f = net.features(x[batch])
            loss = loss_fn(net.head(f), y[batch])
            if net.bias_head is not None:
                loss = loss + loss_fn(net.bias_head(f), b[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def train_augmented(
    task: Task, variant: Variant, seed: int, cfg: AugmentedTrainConfig
) -> nn.Module:
    """``AugmentedTrainConfig``'s recipe on ``task.notes["train_gray"]`` (the grey digits of
    ``task.train``), seeded: the augmentations, the colours and the batches are drawn from
    generators seeded by ``seed``."""
    torch.manual_seed(seed)
    net = build(task, variant)
    gray, y = task.notes["train_gray"], task.train.y
    rho = float(task.notes["rho_train"])
    y_t = torch.as_tensor(y)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.max_lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(y) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.max_lr, total_steps=steps)
    batches, moves = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    colour_rng = np.random.default_rng(seed + 2)
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    for _ in range(cfg.epochs):
        colours = biased_colours(y, rho, colour_rng)
        x = torch.as_tensor(colourise(augment_digits(gray, cfg.augment, moves), colours))
        b = torch.as_tensor(colours)  # colour k is bias value k (``COLOUR_NAMES``)
        for batch in torch.randperm(len(y), generator=batches).split(cfg.batch_size):
            f = net.features(x[batch])
            loss = loss_fn(net.head(f), y_t[batch])
            if net.bias_head is not None:
                loss = loss + loss_fn(net.bias_head(f), b[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()


def to_onnx(net: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """Target-head logits as ONNX (input ``x``, output ``logits``, dynamic batch), with the
    exporter the patches use."""
    dummy = torch.zeros((2, *input_shape), dtype=torch.float32)
    return trace_to_onnx(net, dummy, output_name="logits")


def model_key(task: Task, variant: Variant, seed: int) -> str:
    """Cache key of a deployed model: everything its weights depend on, the training rows
    themselves included (so two settings that share a training split share the model)."""
    digest = hashlib.sha256()
    for array in (task.train.X, task.train.y, task.train.b.astype("U")):
        digest.update(np.ascontiguousarray(array).tobytes())
    config = AUGMENTED_CONFIGS.get(task.dataset) or TRAIN_CONFIGS[task.dataset]
    parts = [task.dataset, variant, seed, asdict(config), VERSION]
    digest.update(json.dumps(parts, sort_keys=True).encode())
    return digest.hexdigest()[:16]


VERSION = 1  # bump when the architectures or training change, so cached models are retrained


def deployed_onnx(task: Task, variant: Variant, seed: int, cache: Path) -> bytes:
    """The deployed model's ONNX bytes, trained now or read from ``cache``."""
    path = cache / f"{task.dataset}-{variant}-{seed}-{model_key(task, variant, seed)}.onnx"
    if path.exists():
        return path.read_bytes()
    blob = to_onnx(train(task, variant, seed), task.input_shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)
    return blob
