"""Eraser rule distillation (paper Eq. 17 and 18): learn the black box's shortcut as a patch.

Eq. 17 turns the black box's answers on the calibration set into soft targets t(x) that keep
what samples of *other* classes with the *same* bias value have in common (the bias "rule") and
cancel the class evidence; Eq. 18 fits a patch G(x) to t(x) by KL. G sees x only, so it serves
unlabelled traffic. The targets come from ``service.eraser_math`` — the one place for the maths.
"""

from __future__ import annotations

from collections.abc import Callable
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
    fit: Any  # patch_training.nets.FitResult
    parity_max_abs_diff: float
    net_description: dict[str, Any]


def train_eraser_patch(
    x: np.ndarray,
    log_m: np.ndarray,
    y: np.ndarray,
    b: np.ndarray,
    holdout: Holdout,
    model: ModelConfig,
    opts: EraserOptions,
    on_epoch: EpochHook | None = None,
) -> EraserPatch:
    """Targets → fit (early stopping on held-out KL) → α curve on held-out → ONNX + parity."""
    from patch_training.export.torch_onnx import check_parity, export_patch
    from patch_training.nets import build_patch_net, fit_to_targets, predict_log, seed_everything

    fit, val = holdout.fit, holdout.val
    reference = (log_m[fit], y[fit], b[fit])  # held-out targets reuse the fit part's means
    t_fit = distillation_targets(*reference)
    t_val = distillation_targets(log_m[val], y[val], b[val], reference=reference)
    seed_everything(opts.fit.seed)  # the initial weights too, so a job is reproducible
    net = build_patch_net(
        model.input.shape, model.num_classes, x[fit], arch=opts.arch, hidden=opts.hidden
    )
    result = fit_to_targets(net, x[fit], t_fit, x[val], t_val, opts.fit, progress=on_epoch)
    log_g_val = predict_log(net, x[val])
    curve = alpha_curve(log_m[val], log_g_val, y[val], b[val], opts.alpha_grid)
    blob = export_patch(net, model.input.shape)
    parity = check_parity(net, blob, x[val][:512])
    choice = choose_alpha(curve, opts.max_avg_acc_drop_pp)
    return EraserPatch(blob, choice, result, parity, _describe(net, opts))


def _describe(net: Any, opts: EraserOptions) -> dict[str, Any]:
    """What the manifest records about the network (architecture, in-graph preprocessing)."""
    described: dict[str, Any] = {"class": type(net).__name__, "arch": opts.arch}
    preprocess = getattr(net, "preprocess", None)
    if preprocess is not None and hasattr(preprocess, "describe"):
        described["preprocessing_in_graph"] = preprocess.describe()
    described["parameters"] = int(sum(p.numel() for p in net.parameters()))
    return described
