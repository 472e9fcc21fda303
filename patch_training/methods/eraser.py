"""Eraser rule distillation (paper Eq. 17 and 18): learn the black box's shortcut as a patch.

Eq. 17 turns the black box's answers on the calibration set into soft targets t(x) that keep
what samples of *other* classes with the *same* bias value have in common (the bias "rule") and
cancel the class evidence; Eq. 18 fits a patch G(x) to t(x) by KL. G sees x only, so it serves
unlabelled traffic. The targets come from ``service.eraser_math`` — the one place for the maths.

Cross-fitting (``folds`` ≥ 2): one net per fold, each judged on the rows it did not see, so α
and the validation gate are decided on every calibration row; the served patch is the fold
nets' ensemble (``nets.FoldEnsemble``). One fold is the single held-out part of earlier jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from patch_training.alpha import DEFAULT_GRID, AlphaChoice, alpha_curve, choose_alpha
from patch_training.holdout import Holdout
from service.eraser_math import distillation_targets
from service.settings import ModelConfig

if TYPE_CHECKING:
    from patch_training.nets import FitConfig

EpochHook = Callable[[int, int], None]


@dataclass(frozen=True)
class EraserOptions:
    fit: FitConfig  # epochs, early stopping, optimiser, seed, device
    arch: str = "auto"
    hidden: tuple[int, ...] = (64, 64)
    alpha_grid: tuple[float, ...] = DEFAULT_GRID
    max_avg_acc_drop_pp: float = 2.0  # the validation gate's tolerance, also bounds α


@dataclass(frozen=True)
class EraserPatch:
    """A trained, exported, parity-checked patch and what was learned about it."""

    blob: bytes
    alpha: AlphaChoice
    fits: list[Any]  # patch_training.nets.FitResult, one per fold
    parity_max_abs_diff: float
    net_description: dict[str, Any]
    judged_rows: int  # calibration rows α and the gate were decided on (out of fold)


def train_eraser_patch(
    x: np.ndarray,
    log_m: np.ndarray,
    y: np.ndarray,
    b: np.ndarray,
    folds: Sequence[Holdout],
    model: ModelConfig,
    opts: EraserOptions,
    on_epoch: EpochHook | None = None,
) -> EraserPatch:
    """Per fold: targets → fit (early stopping on the fold's held-out rows); then the α curve
    on every held-out row (out of fold) → one ONNX graph of the fold nets + parity."""
    from patch_training.export.torch_onnx import check_parity, export_patch
    from patch_training.nets import FoldEnsemble, predict_log

    log_g = np.zeros_like(log_m, dtype=np.float32)
    nets, fits = [], []
    for i, fold in enumerate(folds):
        net, fit = _fit_fold(x, log_m, y, b, fold, model, opts, opts.fit.seed + i, on_epoch)
        log_g[fold.val] = predict_log(net, x[fold.val])
        nets.append(net)
        fits.append(fit)
    judged = np.unique(np.concatenate([f.val for f in folds]))
    curve = alpha_curve(log_m[judged], log_g[judged], y[judged], b[judged], opts.alpha_grid)
    served = nets[0] if len(nets) == 1 else FoldEnsemble(nets)
    blob = export_patch(served, model.input.shape)
    parity = check_parity(served, blob, x[judged][:512])
    choice = choose_alpha(curve, opts.max_avg_acc_drop_pp)
    return EraserPatch(blob, choice, fits, parity, _describe(nets, opts), len(judged))


def _fit_fold(
    x: np.ndarray,
    log_m: np.ndarray,
    y: np.ndarray,
    b: np.ndarray,
    fold: Holdout,
    model: ModelConfig,
    opts: EraserOptions,
    seed: int,
    on_epoch: EpochHook | None,
) -> tuple[Any, Any]:
    """One net fitted to Eq. 17 targets of ``fold.fit``; its held-out targets reuse the fit
    part's group means, so no held-out label leaks into training."""
    from patch_training.nets import build_patch_net, fit_to_targets, seed_everything

    fit, val = fold.fit, fold.val
    reference = (log_m[fit], y[fit], b[fit])
    t_fit = distillation_targets(*reference)
    t_val = distillation_targets(log_m[val], y[val], b[val], reference=reference)
    seed_everything(seed)  # the initial weights too, so a job is reproducible
    net = build_patch_net(
        model.input.shape, model.num_classes, x[fit], arch=opts.arch, hidden=opts.hidden
    )
    result = fit_to_targets(net, x[fit], t_fit, x[val], t_val, opts.fit, progress=on_epoch)
    return net, result


def _describe(nets: Sequence[Any], opts: EraserOptions) -> dict[str, Any]:
    """What the manifest records about the network (architecture, folds, preprocessing)."""
    net = nets[0]
    described: dict[str, Any] = {"class": type(net).__name__, "arch": opts.arch}
    described["folds"] = len(nets)
    preprocess = getattr(net, "preprocess", None)
    if preprocess is not None and hasattr(preprocess, "describe"):
        described["preprocessing_in_graph"] = preprocess.describe()
    described["parameters"] = int(sum(p.numel() for n in nets for p in n.parameters()))
    return described
