"""Eraser rule distillation (paper Eq. 17 and 18): learn the black box's shortcut as a patch.

Eq. 17 (``distillation.distillation_targets``) turns the black box's answers on the calibration
set into soft targets t(x) that keep what samples of *other* classes with the *same* bias value
have in common (the bias "rule") and cancel the class evidence; Eq. 18 fits a patch G(x) to
t(x) by KL. G sees x only, so it serves unlabelled traffic.

Cross-fitting (``folds`` ≥ 2): one net per fold, each judged on the rows it did not see, so α
and the validation gate are decided on every calibration row; the served patch is the fold
nets' ensemble (``nets.FoldEnsemble``). One fold is a single held-out part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from patch_training.folds import Fold
from patch_training.methods.base import EpochHook, FittedPatch, MethodInput
from patch_training.methods.distillation import distillation_targets

if TYPE_CHECKING:
    from torch import nn

    from patch_training.nets.fit import FitResult


class Eraser:
    """The ``eraser`` method: needs x, y and the bias column."""

    kind = "eraser"

    def fit(self, data: MethodInput, on_epoch: EpochHook | None = None) -> FittedPatch:
        """Per fold: Eq. 17 targets → a net fitted to them (early stopping on the fold's
        held-out rows) → its log-outputs on those rows."""
        from patch_training.nets import FoldEnsemble, predict_log

        log_g = np.zeros_like(data.log_m, dtype=np.float32)
        nets, fits = [], []
        for i, fold in enumerate(data.folds):
            net, fit = _fit_fold(data, fold, data.spec.seed + i, on_epoch)
            log_g[fold.val] = predict_log(net, data.x[fold.val])
            nets.append(net)
            fits.append(fit)
        served = nets[0] if len(nets) == 1 else FoldEnsemble(nets)
        judged = np.unique(np.concatenate([f.val for f in data.folds]))
        return FittedPatch(served, log_g, judged, fits, _describe(nets, data.spec.arch))


def _fit_fold(
    data: MethodInput, fold: Fold, seed: int, on_epoch: EpochHook | None
) -> tuple[nn.Module, FitResult]:
    """One net fitted to the Eq. 17 targets of ``fold.fit``; its held-out targets reuse the fit
    part's group means, so no held-out label leaks into training."""
    from patch_training.nets import FitConfig, build_patch_net, fit_to_targets, seed_everything

    if data.b is None:
        raise ValueError("the Eraser needs a bias column (or a pseudo bias label) for every row")
    fit, val = fold.fit, fold.val
    reference = (data.log_m[fit], data.y[fit], data.b[fit])
    t_fit = distillation_targets(*reference)
    t_val = distillation_targets(data.log_m[val], data.y[val], data.b[val], reference=reference)
    seed_everything(seed)  # the initial weights too, so a job is reproducible
    spec, model = data.spec, data.model
    net = build_patch_net(
        model.input.shape, model.num_classes, data.x[fit], arch=spec.arch, hidden=spec.hidden
    )
    config = FitConfig.from_spec(spec)
    result = fit_to_targets(net, data.x[fit], t_fit, data.x[val], t_val, config, on_epoch)
    return net, result


def _describe(nets: Sequence[nn.Module], arch: str) -> dict[str, Any]:
    """What the manifest records about the network (architecture, folds, preprocessing)."""
    net = nets[0]
    described: dict[str, Any] = {"class": type(net).__name__, "arch": arch}
    described["folds"] = len(nets)
    preprocess = getattr(net, "preprocess", None)
    if preprocess is not None and hasattr(preprocess, "describe"):
        described["preprocessing_in_graph"] = preprocess.describe()
    described["parameters"] = int(sum(p.numel() for n in nets for p in n.parameters()))
    return described
