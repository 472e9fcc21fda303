"""Fit a patch net G to the Eraser's soft targets t(x) by minimising KL(t ‖ G) (paper Eq. 18)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from patch_training.nets.torch_env import resolve_device
from service.jobs.spec import TrainingJobSpec

# An epoch must beat the best val KL by this relative margin to reset patience; otherwise
# float noise in a converged fit keeps "improving" by 1e-9 and early stopping never fires.
_REL_IMPROVEMENT = 1e-4

# Fit sets up to this many rows train exactly as they always have (the spec's batch size,
# learning rate and epochs): every set the quality benchmark trains on is below it (COMPAS
# ~360, Adult ~2.6k, Colored MNIST <= ~5.3k fit rows per fold), so its figures do not move.
LARGE_FIT_ROWS = 8192
# Above it, an epoch keeps the step count it has at LARGE_FIT_ROWS and its batches grow with N:
# a small net's step is mostly fixed overhead (on a loaded 2-core machine, one thread, the
# 64-64 MLP: 5.2 ms for 128 rows, 9.8 ms for 1,024), so larger batches are what makes a large
# set cheap per row. The epoch cap then keeps the rows the optimiser sees under a budget, so a
# set that never early-stops (resampled, duplicated rows) still ends (docs/training.md).
LARGE_ROW_BUDGET = 2**20  # most rows one large fit's optimiser sees (epochs x fit rows)
MIN_LARGE_EPOCHS = 10  # the epoch cap never falls below this, however large the set
MAX_LR_SCALE = 4.0  # the √batch learning-rate rule stops here (batches of 16x the config's)


@dataclass(frozen=True)
class FitConfig:
    """The fit loop's knobs; their defaults are the job spec's (``from_spec``)."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    patience: int
    seed: int
    device: str  # "auto" | "cpu" | "cuda[:i]"

    def __post_init__(self) -> None:
        if min(self.epochs, self.batch_size, self.patience) < 1 or self.lr <= 0:
            raise ValueError(f"epochs, batch_size, patience must be >= 1 and lr > 0: {self}")

    @classmethod
    def from_spec(cls, spec: TrainingJobSpec) -> FitConfig:
        return cls(
            epochs=spec.epochs,
            batch_size=spec.batch_size,
            lr=spec.lr,
            weight_decay=spec.weight_decay,
            patience=spec.patience,
            seed=spec.seed,
            device=spec.device,
        )


@dataclass(frozen=True)
class StepPlan:
    """How a fit of ``n_fit`` rows is stepped: batch size, learning rate, most epochs, patience.

    Up to ``LARGE_FIT_ROWS`` it is the config unchanged. Above it the budget is in optimiser
    steps, not passes: an epoch keeps ``ceil(LARGE_FIT_ROWS / batch_size)`` steps (64 for the
    default 128) with batches of ``ceil(n_fit / steps)`` rows; the learning rate grows with the
    square root of the batch (the usual rule for Adam: the gradient noise falls as 1/√batch),
    at most ``MAX_LR_SCALE`` times; the epoch cap shrinks so that the optimiser sees at most
    ``LARGE_ROW_BUDGET`` rows (epochs · n_fit), but never below ``MIN_LARGE_EPOCHS`` epochs.
    Patience is capped at a third of the epoch cap, so early stopping can still fire first.
    """

    batch_size: int
    lr: float
    epochs: int
    patience: int
    steps_per_epoch: int


def step_plan(n_fit: int, cfg: FitConfig) -> StepPlan:
    """The ``StepPlan`` for ``n_fit`` fit rows under ``cfg``; see its docstring for the rule."""
    if n_fit < 1:
        raise ValueError(f"need at least one fit row, got {n_fit}")
    if n_fit <= LARGE_FIT_ROWS:
        steps = math.ceil(n_fit / cfg.batch_size)
        return StepPlan(cfg.batch_size, cfg.lr, cfg.epochs, cfg.patience, steps)
    steps = math.ceil(LARGE_FIT_ROWS / cfg.batch_size)
    batch = max(cfg.batch_size, math.ceil(n_fit / steps))
    lr = cfg.lr * min(MAX_LR_SCALE, math.sqrt(batch / cfg.batch_size))
    epochs = min(cfg.epochs, max(MIN_LARGE_EPOCHS, math.ceil(LARGE_ROW_BUDGET / n_fit)))
    patience = min(cfg.patience, max(1, epochs // 3))
    return StepPlan(batch, lr, epochs, patience, math.ceil(n_fit / batch))


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    epochs_run: int
    best_val_kl: float
    history: list[tuple[float, float]]  # (train KL, val KL) per epoch
    seconds: float
    device: str
    plan: StepPlan | None = field(default=None, compare=False)  # how it was stepped


def kl_rows(t: torch.Tensor, log_g: torch.Tensor) -> torch.Tensor:
    """Per-row KL(t ‖ G) = Σ t·(log t − log G), with 0·log 0 = 0 for one-hot-ish targets.

    Same gradient as soft-target cross-entropy (the target entropy is a constant), but the
    reported value is 0 at a perfect fit, so it is comparable across data sets.
    """
    return (torch.special.xlogy(t, t) - t * log_g).sum(dim=1)


def _device_of(net: nn.Module) -> torch.device:
    return next(iter(net.parameters()), torch.empty(0)).device


def predict_log(net: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """log G(x) as float32 [N, K] on the host, in eval mode (BatchNorm uses running stats,
    exactly what the exported graph computes)."""
    net.eval()
    device = _device_of(net)
    xs = torch.as_tensor(np.asarray(x, dtype=np.float32))
    with torch.no_grad():
        outs = [net(xs[i : i + batch_size].to(device)).cpu() for i in range(0, len(xs), batch_size)]
    return torch.cat(outs).numpy()


def _eval_kl(net: nn.Module, x: torch.Tensor, t: torch.Tensor, batch_size: int) -> float:
    """Mean KL over a whole set, accumulated in float64 so it does not depend on batching."""
    net.eval()
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            total += kl_rows(t[i : i + batch_size], net(x[i : i + batch_size])).double().sum()
    return float(total) / len(x)


def _train_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    data: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    gen: torch.Generator,
) -> float:
    """One shuffled pass; returns the size-weighted mean of the batch KLs seen while training.

    The loss is summed on the device and read once per epoch: a host sync per step would
    dominate the step time of these small nets on a GPU.
    """
    x, t = data
    net.train()
    order = torch.randperm(len(x), generator=gen).to(x.device)
    total, seen = torch.zeros((), device=x.device), 0
    for i in range(0, len(x), batch_size):
        idx = order[i : i + batch_size]
        if len(idx) == 1 and batch_size > 1:
            continue  # a lone trailing sample breaks BatchNorm in train mode; skip it
        loss = kl_rows(t[idx], net(x[idx])).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach() * len(idx)
        seen += len(idx)
    return float(total) / max(seen, 1)


def _as_pair(x: np.ndarray, t: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (inputs, soft targets) set; bad targets would otherwise train silently."""
    x = np.asarray(x, dtype=np.float32)
    t = np.asarray(t, dtype=np.float32)
    if t.ndim != 2 or len(x) != len(t) or len(x) == 0:
        raise ValueError(f"{name}: need x [N, ...] and t [N, K], N >= 1; got {x.shape}, {t.shape}")
    if not np.all(np.isfinite(t)) or t.min() < 0 or np.abs(t.sum(axis=1) - 1).max() > 1e-3:
        raise ValueError(f"{name}: targets must be finite probabilities with rows summing to 1")
    return x, t


def _snapshot(net: nn.Module) -> dict[str, torch.Tensor]:
    """Copy of all weights and buffers (BatchNorm running stats included)."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@dataclass
class _Best:
    """Best-so-far validation KL, its epoch and the weights that achieved it."""

    val_kl: float = float("inf")
    epoch: int = 0
    state: dict[str, torch.Tensor] | None = None


Pair = tuple[torch.Tensor, torch.Tensor]


def _run_epochs(
    net: nn.Module,
    fit: Pair,
    val: Pair,
    cfg: FitConfig,
    plan: StepPlan,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[tuple[float, float]], _Best]:
    """Train until ``plan.epochs`` or ``plan.patience`` epochs without a real val improvement."""
    opt = torch.optim.AdamW(net.parameters(), lr=plan.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[tuple[float, float]] = []
    best = _Best()
    for epoch in range(1, plan.epochs + 1):
        train_kl = _train_epoch(net, opt, fit, plan.batch_size, gen)
        val_kl = _eval_kl(net, *val, plan.batch_size)
        history.append((train_kl, val_kl))
        if progress is not None:
            progress(epoch, plan.epochs)
        if val_kl < best.val_kl * (1 - _REL_IMPROVEMENT):
            best = _Best(val_kl, epoch, _snapshot(net))
        elif epoch - best.epoch >= plan.patience:
            break
    return history, best


def fit_to_targets(
    net: nn.Module,
    x_fit: np.ndarray,
    t_fit: np.ndarray,
    x_val: np.ndarray,
    t_val: np.ndarray,
    cfg: FitConfig,
    progress: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Train ``net`` with AdamW on shuffled mini-batches, early-stopping on validation KL;
    batch size, learning rate and epoch budget follow ``step_plan`` (the config's own up to
    ``LARGE_FIT_ROWS`` fit rows).

    The best-validation weights are restored and ``net`` is left in eval mode on the CPU,
    ready for ONNX export. Shuffling uses its own generator seeded with ``cfg.seed``; weight
    initialisation is the caller's (``seed_everything`` before ``build_patch_net``).
    """
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    fit = _to_device(*_as_pair(x_fit, t_fit, "fit"), device)
    val = _to_device(*_as_pair(x_val, t_val, "val"), device)
    plan = step_plan(len(fit[0]), cfg)
    history, best = _run_epochs(net.to(device), fit, val, cfg, plan, progress)
    if best.state is None:
        raise RuntimeError("training diverged: validation KL was never finite")
    net.load_state_dict(best.state)
    net.to("cpu").eval()
    seconds = time.perf_counter() - start
    return FitResult(best.epoch, len(history), best.val_kl, history, seconds, str(device), plan)


def _to_device(x: np.ndarray, t: np.ndarray, device: torch.device) -> Pair:
    """Calibration sets are small: move them once instead of per batch."""
    return torch.from_numpy(x).to(device), torch.from_numpy(t).to(device)
