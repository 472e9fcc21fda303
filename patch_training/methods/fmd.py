"""FMD (Chen et al., NeurIPS 2023) for a black box: unlearn the calibration rows that make a
surrogate counterfactually biased, and serve what unlearning removed as a patch.

Per fold (cross-fitted like the Eraser; docs/fmd.md):

1. distil a surrogate S from the black box on the fold's fit rows (KL to its probabilities,
   early stopping on the fold's held-out rows), then refit S's top layer exactly with the
   penalty (λ·n/2)‖θ‖² (``influence.fit_top_layer``), so H is its exact Hessian;
2. the influence of every fit row on S's smooth counterfactual bias over the fit rows' pairs,
   and for each K of the grid the Newton step that replaces the K most harmful rows by their
   counterfactuals (``influence.unlearn``): S' = S with the top layer W + Δ_K;
3. the patch log_softmax(log S − log S'), judged on the fold's held-out rows.

K is one fraction of the fit rows for all folds, chosen on the tuning rows out of fold: the
lowest counterfactual bias of the *served* answer at α = 1 (the black box's answers on the
rows and their counterfactuals, patched), among the Ks whose average-group accuracy falls by
at most ``fmd.max_avg_acc_drop_pp``; K = 0 (no update, an identity patch) unless some K lowers
it. The served patch is the fold patches' ``FoldEnsemble``; every fold net is one graph with
both heads on the shared penultimate layer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from patch_training.audit import row_changes
from patch_training.folds import Fold
from patch_training.methods.base import EpochHook, FittedPatch, MethodInput
from patch_training.methods.eraser import _describe
from patch_training.methods.influence import fit_top_layer, unlearn, with_bias
from patch_training.metrics import group_report
from service.eraser_math import fair_log_probs, log_softmax

if TYPE_CHECKING:
    from torch import nn

    from patch_training.nets.fit import FitResult


@dataclass(frozen=True)
class FoldOutcome:
    """One fold's surrogate, its unlearning and the held-out judgement of every K."""

    fold: Fold
    surrogate: Any  # nets.surrogate.Surrogate (torch, imported lazily)
    top_layer: np.ndarray  # W [K, d+1] after the exact refit
    steps: np.ndarray  # [len(grid), K, d+1]
    ks: list[int]  # rows replaced per grid point
    influence: np.ndarray  # [len(fold.fit)]
    harmful: int
    fit: FitResult
    served_change: np.ndarray  # [len(grid), len(val)]: served row changes at α = 1
    served_pred: np.ndarray  # [len(grid), len(val)]
    surrogate_change: np.ndarray  # [len(grid), len(val)]: S' row changes


@dataclass(frozen=True)
class FmdPatch(FittedPatch):
    """A ``FittedPatch`` plus what the report shows about the unlearning."""

    grid: list[float] = dataclasses.field(default_factory=list)  # K fractions, 0 first
    chosen: int = 0  # index into grid
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    influence: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    # float64 [N]: each tuning row's influence on B, averaged over the folds that fitted it
    folds: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def chosen_fraction(self) -> float:
        return self.grid[self.chosen]


class Fmd:
    """The ``fmd`` method: needs x, y, the attribute's groups (the bias column) and the
    counterfactuals of every row with the black box's answers on them (flipped input columns
    or uploaded pairs: the method does not care which)."""

    kind = "fmd"

    def fit(self, data: MethodInput, on_epoch: EpochHook | None = None) -> FmdPatch:
        from patch_training.nets import FoldEnsemble, predict_log
        from patch_training.nets.surrogate import UnlearnedPatch

        if data.counterfactual is None or data.b is None:
            raise ValueError("FMD needs the attribute and every row's counterfactuals")
        grid = [0.0, *(k for k in data.spec.fmd.k_grid if k > 0)]
        outcomes = [
            _fit_fold(data, fold, grid, data.spec.seed + i, on_epoch)
            for i, fold in enumerate(data.folds)
        ]
        judged = np.unique(np.concatenate([f.val for f in data.folds]))
        curve, chosen = _choose(data, outcomes, grid, judged)
        nets: list[nn.Module] = []
        log_g = np.zeros_like(data.log_m, dtype=np.float32)
        for o in outcomes:
            patch = UnlearnedPatch(o.surrogate, o.top_layer + o.steps[chosen])
            log_g[o.fold.val] = predict_log(patch, data.x[o.fold.val])
            nets.append(patch)
        served = nets[0] if len(nets) == 1 else FoldEnsemble(nets)
        description = _describe(nets, f"{data.spec.arch} surrogate") | {
            "surrogate_hidden": list(data.spec.fmd.hidden),
            "heads": "log_softmax(log S(x) − log S'(x)): S and the unlearned S' on one "
            "penultimate layer",
        }
        return FmdPatch(
            served=served,
            out_of_fold=log_g,
            judged=judged,
            fits=[o.fit for o in outcomes],
            description=description,
            grid=grid,
            chosen=chosen,
            curve=curve,
            influence=_mean_influence(len(data.y), outcomes),
            folds=[
                {
                    "fit_rows": len(o.fold.fit),
                    "harmful_rows": o.harmful,
                    "rows_replaced": o.ks[chosen],
                    "step_norm": round(float(np.linalg.norm(o.steps[chosen])), 6),
                    "top_layer_norm": round(float(np.linalg.norm(o.top_layer)), 6),
                }
                for o in outcomes
            ],
        )


def _fit_fold(
    data: MethodInput, fold: Fold, grid: list[float], seed: int, on_epoch: EpochHook | None
) -> FoldOutcome:
    from patch_training.nets import FitConfig, fit_to_targets, seed_everything
    from patch_training.nets.surrogate import build_surrogate

    assert data.counterfactual is not None
    config, spec = data.spec.fmd, data.spec
    fit, val = fold.fit, fold.val
    cf = data.counterfactual
    t = np.exp(log_softmax(data.log_m))
    seed_everything(seed)
    surrogate = build_surrogate(
        data.model.input.shape, data.model.num_classes, data.x[fit], spec.arch, config.hidden
    )
    fit_config = dataclasses.replace(FitConfig.from_spec(spec), epochs=config.epochs, seed=seed)
    result = fit_to_targets(
        surrogate, data.x[fit], t[fit], data.x[val], t[val], fit_config, on_epoch
    )
    ht = with_bias(surrogate.penultimate(data.x[fit]))
    w = fit_top_layer(ht, t[fit], config.l2, surrogate.head_matrix())
    surrogate.set_head(w)
    ht_cf = with_bias(surrogate.penultimate(cf.x[fit]))
    labels = np.eye(data.model.num_classes)[data.y[fit]]
    targets = labels if config.targets == "labels" else t[fit]
    ks = [round(f * len(fit)) for f in grid]
    unlearning = unlearn(w, ht, ht_cf, targets, config.l2, ks)
    # held out: every K's patch, served at α = 1 on the rows and their counterfactuals
    hv = with_bias(surrogate.penultimate(data.x[val]))
    hv_cf = with_bias(surrogate.penultimate(cf.x[val]))
    served_change, served_pred, surrogate_change = [], [], []
    for step in unlearning.steps:
        patch, patch_cf = log_softmax(-hv @ step.T), log_softmax(-hv_cf @ step.T)
        fair = fair_log_probs(data.log_m[val], [patch], [1.0])
        fair_cf = fair_log_probs(cf.log_m[val], [patch_cf], [1.0])
        served_change.append(row_changes(fair, fair_cf).change)
        served_pred.append(np.argmax(fair, axis=1))
        w_new = w + step
        surrogate_change.append(
            row_changes(log_softmax(hv @ w_new.T), log_softmax(hv_cf @ w_new.T)).change
        )
    return FoldOutcome(
        fold=fold,
        surrogate=surrogate,
        top_layer=w,
        steps=unlearning.steps,
        ks=unlearning.ks,
        influence=unlearning.influence,
        harmful=unlearning.harmful,
        fit=result,
        served_change=np.stack(served_change),
        served_pred=np.stack(served_pred),
        surrogate_change=np.stack(surrogate_change),
    )


def _choose(
    data: MethodInput, outcomes: list[FoldOutcome], grid: list[float], judged: np.ndarray
) -> tuple[list[dict[str, Any]], int]:
    """The out-of-fold curve over the K grid and the chosen index (module docstring)."""
    assert data.b is not None
    n = len(data.y)
    served = np.zeros((len(grid), n))
    surrogate = np.zeros((len(grid), n))
    pred = np.zeros((len(grid), n), dtype=np.int64)
    for o in outcomes:
        served[:, o.fold.val] = o.served_change
        surrogate[:, o.fold.val] = o.surrogate_change
        pred[:, o.fold.val] = o.served_pred
    y, b = data.y[judged], data.b[judged]
    curve = []
    for i, fraction in enumerate(grid):
        report = group_report(y, pred[i, judged], b)
        curve.append(
            {
                "k_fraction": fraction,
                "rows_replaced": [o.ks[i] for o in outcomes],
                "served_cf_bias": round(100 * float(served[i, judged].mean()), 4),
                "surrogate_cf_bias": round(100 * float(surrogate[i, judged].mean()), 4),
                **{m: round(v, 4) for m, v in report.as_percent().items()},
            }
        )
    floor = curve[0]["avg_group_acc"] - data.spec.fmd.max_avg_acc_drop_pp
    eligible = [i for i, c in enumerate(curve) if c["avg_group_acc"] >= floor]
    best = min(eligible, key=lambda i: (curve[i]["served_cf_bias"], i))
    if curve[best]["served_cf_bias"] >= curve[0]["served_cf_bias"]:
        best = 0
    for i, c in enumerate(curve):
        c["chosen"] = i == best
        c["eligible"] = i in eligible
    return curve, best


def _mean_influence(n: int, outcomes: list[FoldOutcome]) -> np.ndarray:
    """Each row's influence averaged over the folds that fitted it (NaN: no fold did)."""
    total, count = np.zeros(n), np.zeros(n)
    for o in outcomes:
        total[o.fold.fit] += o.influence
        count[o.fold.fit] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
