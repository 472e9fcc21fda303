"""``poisoner_retrain``: what retraining the deployed model the Poisoner's way would achieve.

A laboratory row, not a gateway feature: the Poisoner's own second stage (Zhang et al., "Poisoning
for Debiasing", Sec. 3.3) retrains the *target* model, so it needs the deployed model's
architecture, its training recipe and its training rows, none of which a gateway in front of a
black box has. The benchmark has all three (``bench.quality.deployed``), so it can show what the
label-free patches are up against. The row reads no bias label for training either; the
attribute is only used to score the test split and to describe f_B (``bias_discovery``).

Stage I. f_B is trained on the deployed model's training split (x, y), label-free, by guided
label poisoning (``patch_training.nets.poisoned.train_biased_model``, the same trainer the
``method: "poisoner"`` jobs use, at its defaults). Each training row is then *aligned* when f_B
predicts its clean label and *conflicting* when it does not: D = D_a ∪ D_c.

Stage II. The deployed architecture (``deployed.build``, fresh weights, seeded with the run's
seed) is retrained on the same rows with the deployed model's optimiser, epochs and batch size
(``deployed.TRAIN_CONFIGS``), under two changes to its cross-entropy:

- **group weights** — every aligned row weighs |D| / |D_a| and every conflicting row
  λ · |D| / |D_c| (λ = 1.25, inside the paper's 1–1.5), so each part carries the same total
  weight and the conflicting part λ times more, to make up for the conflicting rows f_B missed;
- **group-wise inverse focal loss** — within a mini-batch, let p̄_a and p̄_c be the mean
  probability the model gives the true class over the batch's aligned and its conflicting rows.
  A row of part g costs (1 − p̄_g)^(−γ) · (−log p_y): the better a part is already fitted, the
  *more* its rows cost (the inverse of the focal loss), which keeps the few, up-weighted
  conflicting rows from being memorised and then ignored. The whole batch is scaled by
  β = (1 − p̄_c)^γ for numerical stability. γ = 1.

Put together a conflicting row costs w_c · (−log p_y) and an aligned row
w_a · ((1 − p̄_c) / (1 − p̄_a))^γ · (−log p_y): while the conflicting rows are fitted better than
the aligned ones (p̄_c > p̄_a), the aligned rows are discounted. The batch loss is the mean over
its rows.

Choices where the paper is silent: p̄_a and p̄_c are batch statistics treated as constants (no
gradient flows through them); a batch without conflicting rows takes p̄_c = p̄_a (plain
weighted cross-entropy; symmetrically, a batch without aligned rows has nothing to scale);
1 − p̄ is kept ≥ 1e-6; f_B classifies the rows it was trained on (the paper's partition of its
own training set); when f_B makes no mistake every row weighs 1. Only deployed models trained by
the plain recipe are retrained (``supported``). The test decisions are cached beside the
deployed models, keyed by the deployed model's key and these settings.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.quality.datasets import Task
from bench.quality.deployed import TRAIN_CONFIGS, build, model_key
from patch_training.nets.poisoned import BiasedModelConfig

ROW = "poisoner_retrain"
VERSION = 2  # bump when the retraining changes, so cached decisions are recomputed
MIN_GAP = 1e-6  # the smallest 1 − p̄ a group's factor divides by


@dataclass(frozen=True)
class RetrainConfig:
    lam: float = 1.25  # λ: extra weight of the conflicting part (paper: 1–1.5)
    gamma: float = 1.0  # γ of the group-wise inverse focal loss (paper: 1)
    biased: BiasedModelConfig = field(default_factory=BiasedModelConfig)


def group_weights(conflicting: np.ndarray, lam: float) -> np.ndarray:
    """Per-row weights: |D|/|D_a| for aligned rows, λ·|D|/|D_c| for conflicting ones (1 for
    every row when either part is empty)."""
    conflicting = np.asarray(conflicting, dtype=bool)
    n, n_c = len(conflicting), int(conflicting.sum())
    n_a = n - n_c
    if n_c == 0 or n_a == 0:
        return np.ones(n, dtype=np.float32)
    return np.where(conflicting, lam * n / n_c, n / n_a).astype(np.float32)


def gifl_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    conflicting: torch.Tensor,
    weights: torch.Tensor,
    gamma: float = 1.0,
) -> torch.Tensor:
    """Mean over the batch of w · β · L_GIFL (see the module docstring)."""
    log_py = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)
    p_y = log_py.detach().exp()
    aligned = ~conflicting
    p_a = p_y[aligned].mean() if aligned.any() else p_y.mean()
    p_c = p_y[conflicting].mean() if conflicting.any() else p_a
    gap_a = (1 - p_a).clamp_min(MIN_GAP)
    gap_c = (1 - p_c).clamp_min(MIN_GAP)
    factor = torch.where(conflicting, gap_c ** (-gamma), gap_a ** (-gamma))
    beta = gap_c**gamma
    return (weights * beta * factor * -log_py).mean()


def partition(
    task: Task, seed: int, config: RetrainConfig | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Stage I: f_B on ``task.train`` (x, y only), then which training rows it gets wrong
    (``conflicting``), with the weights that follow and f_B's bias discovery (the attribute
    used only to score it)."""
    from patch_training.methods.poisoner import bias_discovery
    from patch_training.nets import predict_log
    from patch_training.nets.poisoned import train_biased_model

    config = config or RetrainConfig()
    train = task.train
    started = time.perf_counter()
    f_b, _ = train_biased_model(train.X, train.y, config.biased, seed,
                                num_classes=len(task.classes))  # fmt: skip
    pred = predict_log(f_b, train.X).argmax(axis=1)
    conflicting = pred != train.y
    weights = group_weights(conflicting, config.lam)
    discovery = bias_discovery(train.y, pred, train.b).as_dict()
    info = {
        "training_rows": len(train),
        "conflicting_pct": round(100 * float(conflicting.mean()), 2),
        "weights": {
            "aligned": _first(weights, ~conflicting),
            "conflicting": _first(weights, conflicting),
        },
        "bias_discovery": {k: v for k, v in discovery.items() if k != "mapping"},
        "f_b_s": round(time.perf_counter() - started, 1),
        "config": {
            "lambda": config.lam,
            "gamma": config.gamma,
            "steps": config.biased.steps,
            "batch_size": config.biased.batch_size,
            "p": config.biased.p,
        },
    }
    return conflicting, info


def retrain(
    task: Task, seed: int, config: RetrainConfig | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Stage I (``partition``) and stage II (the reweighted, GIFL-trained deployed
    architecture) on ``task.train``; the net in eval mode and what the stages found."""
    config = config or RetrainConfig()
    conflicting, info = partition(task, seed, config)
    started = time.perf_counter()
    weights = group_weights(conflicting, config.lam)
    net = fit_weighted(task, conflicting, weights, seed, config.gamma)
    return net, info | {"retrain_s": round(time.perf_counter() - started, 1)}


def _first(weights: np.ndarray, mask: np.ndarray) -> float | None:
    """The (shared) weight of a part's rows; None for an empty part."""
    return round(float(weights[mask][0]), 4) if mask.any() else None


def fit_weighted(
    task: Task, conflicting: np.ndarray, weights: np.ndarray, seed: int, gamma: float
) -> nn.Module:
    """The deployed vanilla architecture and recipe (AdamW, epochs, batch size) with the loss
    of Eq. 11 in place of plain cross-entropy."""
    torch.manual_seed(seed)
    net = build(task, "vanilla")
    cfg = TRAIN_CONFIGS[task.dataset]
    x = torch.as_tensor(task.train.X, dtype=torch.float32)
    y = torch.as_tensor(task.train.y, dtype=torch.int64)
    c = torch.as_tensor(np.asarray(conflicting, dtype=bool))
    w = torch.as_tensor(weights, dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(cfg.epochs):
        for batch in torch.randperm(len(y), generator=gen).split(cfg.batch_size):
            loss = gifl_loss(net(x[batch]), y[batch], c[batch], w[batch], gamma)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def supported(task: Task) -> bool:
    """Whether the deployed model's recipe is the plain one (``deployed.TRAIN_CONFIGS``) that
    this retraining reproduces. A recipe that draws new training images every epoch (the
    augmented Colored MNIST setting) has no fixed D_a / D_c to weigh: no row there."""
    return task.dataset in TRAIN_CONFIGS


def predict(net: nn.Module, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Class index per row."""
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            chunk = torch.as_tensor(x[start : start + batch], dtype=torch.float32)
            out.append(net(chunk).argmax(dim=1).numpy())
    return np.concatenate(out)


def retrain_decisions(
    task: Task, seed: int, cache: Path | None, config: RetrainConfig | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Test-split decisions of the retrained model and what the stages found, from ``cache``
    when this deployed model (its training rows and recipe) was retrained with these settings.
    ``info["without_gifl"]`` holds the decisions of the same partition and weights under plain
    weighted cross-entropy (Eq. 9, γ = 0): a diagnostic of what the focal part adds."""
    config = config or RetrainConfig()
    path = None
    if cache is not None:
        key = json.dumps([model_key(task, "vanilla", seed), asdict(config), VERSION],
                         sort_keys=True, default=str)  # fmt: skip
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        path = cache / f"{task.dataset}-retrain-{seed}-{digest}.npz"
        if path.exists():
            stored = np.load(path)
            info = json.loads(str(stored["info"])) | {"cached": True}
            return stored["pred"], info | {"without_gifl_pred": stored["without_gifl"]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the training workers share the cores
    try:
        conflicting, info = partition(task, seed, config)
        weights = group_weights(conflicting, config.lam)
        started = time.perf_counter()
        pred = predict(fit_weighted(task, conflicting, weights, seed, config.gamma), task.test.X)
        info["retrain_s"] = round(time.perf_counter() - started, 1)
        plain = predict(fit_weighted(task, conflicting, weights, seed, 0.0), task.test.X)
    finally:
        torch.set_num_threads(threads)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, pred=pred, without_gifl=plain, info=np.array(json.dumps(info)))
        tmp.replace(path)
    return pred, info | {"without_gifl_pred": plain}
