"""Label-free patches from the Poisoner's biased model f_B (Zhang et al., ACM MM 2024, Sec. 3.2).

f_B is trained on the calibration rows' x and y only (``nets.poisoned``: guided label
poisoning), so it captures the data's shortcut without a single bias label. Two ways to serve
it, two methods:

- ``poisoner``: the patch is f_B itself, temperature-scaled: log G(x) = log_softmax(f_B(x)/T).
- ``poisoner-eraser``: f_B's predicted class is a pseudo bias label b̂ and the Eraser's Eq. 17
  and 18 run on (x, y, b̂) unchanged (``Eraser.fit`` on the same folds).

Both are cross-fitted like the Eraser: per fold, one f_B trained on the fold's fit rows; the
fold's held-out rows get f_B's out-of-fold outputs. ``MethodInput.b`` is never read while
training: a label-free job may pass anything there (the bias column, when present, is for
evaluation only — ``bias_discovery``).

Choices where the paper is silent (see also ``nets.poisoned`` and docs/poisoner.md):

- T is fitted per fold, by NLL against the clean labels on that fold's held-out rows — the rows
  the Eraser uses for early stopping; one scalar per fold, so the out-of-fold outputs barely
  depend on their own labels. The served patch is the fold nets' ``FoldEnsemble`` of
  ``Tempered`` nets.
- b̂ of a row is the class predicted by the f_B that did not see it (out of fold), as a string
  (``"0"``, ``"1"``, ...). Then ``Eraser.fit`` builds fold k's targets from fit rows whose b̂
  came from f_Bs trained partly on fold k's held-out rows: their labels reach fold k's net only
  through those rows' b̂ (class indices), a small leak for α tuning and none for the verdict
  rows, which no method sees.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from patch_training.folds import Fold
from patch_training.methods.base import EpochHook, FittedPatch, MethodInput
from patch_training.methods.eraser import Eraser, _describe

if TYPE_CHECKING:
    from torch import nn

    from patch_training.nets.fit import FitResult
    from patch_training.nets.poisoned import BiasedHistory, BiasedModelConfig


@dataclass(frozen=True)
class BiasedFold:
    """f_B of one fold: trained on ``fold.fit``, temperature and outputs on ``fold.val``."""

    fold: Fold
    net: nn.Module  # untempered f_B: log-softmax [N, K]
    temperature: float
    log_p_val: np.ndarray  # float64 [len(val), K]: untempered log f_B on the held-out rows
    val_nll: float  # held-out NLL of the tempered outputs
    history: BiasedHistory
    seconds: float


@dataclass(frozen=True)
class PoisonerPatch(FittedPatch):
    """A ``FittedPatch`` plus what the report shows about f_B."""

    pseudo_bias: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    # int64 [N]: f_B's out-of-fold predicted class per row (−1 where not judged)
    histories: list[BiasedHistory] = dataclasses.field(default_factory=list)  # one per fold
    temperatures: list[float] = dataclasses.field(default_factory=list)  # one per fold


def fit_biased_folds(
    data: MethodInput, config: BiasedModelConfig, on_epoch: EpochHook | None = None
) -> list[BiasedFold]:
    """One f_B per fold on (x, y) of ``fold.fit`` (seed ``spec.seed + fold index``), its
    temperature fitted on ``fold.val``. ``data.b`` is not read."""
    from patch_training.nets import predict_log
    from patch_training.nets.poisoned import (
        fit_temperature,
        tempered_log_probs,
        train_biased_model,
    )

    cfg = config.with_spec(data.spec)
    out = []
    for i, fold in enumerate(data.folds):
        start = time.perf_counter()
        net, history = train_biased_model(
            data.x[fold.fit],
            data.y[fold.fit],
            cfg,
            data.spec.seed + i,
            on_step=on_epoch,
            num_classes=data.model.num_classes,
            val=(data.x[fold.val], data.y[fold.val]),
        )
        log_p = predict_log(net, data.x[fold.val]).astype(np.float64)
        y_val = data.y[fold.val]
        temperature = fit_temperature(log_p, y_val)
        tempered = tempered_log_probs(log_p, temperature)
        nll = float(-tempered[np.arange(len(y_val)), y_val].mean())
        seconds = time.perf_counter() - start
        out.append(BiasedFold(fold, net, temperature, log_p, nll, history, seconds))
    return out


def out_of_fold_predictions(n_rows: int, biased: Sequence[BiasedFold]) -> np.ndarray:
    """f_B's predicted class for each row, by the fold net that did not see it; −1 for a row
    in no held-out part."""
    pred = np.full(n_rows, -1, dtype=np.int64)
    for bf in biased:
        pred[bf.fold.val] = bf.log_p_val.argmax(axis=1)
    return pred


def biased_ensemble(biased: Sequence[BiasedFold]) -> nn.Module:
    """The fold f_Bs, each tempered, as one net: what the ``poisoner`` patch serves."""
    from patch_training.nets import FoldEnsemble
    from patch_training.nets.poisoned import Tempered

    members = [Tempered(bf.net, bf.temperature).eval() for bf in biased]
    return members[0] if len(members) == 1 else FoldEnsemble(members).eval()


def predict_pseudo_bias(biased: Sequence[BiasedFold], x: np.ndarray) -> np.ndarray:
    """b̂ of rows no f_B saw (e.g. the verdict rows): the predicted class of the served f_B
    ensemble (``biased_ensemble``), int64 [N]."""
    from patch_training.nets import predict_log

    return predict_log(biased_ensemble(biased), x).argmax(axis=1).astype(np.int64)


def biased_passes(data: MethodInput, config: BiasedModelConfig) -> int:
    """Progress calls ``fit_biased_folds`` makes in all (one per f_B history point)."""
    return sum(config.passes(len(fold.fit)) for fold in data.folds)


def _resolve(config: BiasedModelConfig | None, data: MethodInput) -> BiasedModelConfig:
    from patch_training.nets.poisoned import BiasedModelConfig

    if config is None:
        return BiasedModelConfig.from_job(data.spec)
    return config.with_spec(data.spec)


def _fit_result(bf: BiasedFold, device: str) -> FitResult:
    """The shared ``FitResult`` record for an f_B: no early stopping (best = last epoch); the
    'KL' columns are training loss and untempered held-out NLL (= KL to one-hot targets);
    ``best_val_kl`` is the tempered held-out NLL."""
    from patch_training.nets.fit import FitResult

    h = bf.history
    val = h.val_nll or [float("nan")] * len(h.loss)
    pairs = list(zip(h.loss, val, strict=True))
    return FitResult(len(pairs), len(pairs), bf.val_nll, pairs, bf.seconds, device)


def _judged(folds: Sequence[Fold]) -> np.ndarray:
    return np.unique(np.concatenate([f.val for f in folds]))


def _biased_description(
    config: BiasedModelConfig, biased: Sequence[BiasedFold]
) -> dict[str, object]:
    from patch_training.nets.poisoned import describe_config

    return {
        **describe_config(config),
        "temperatures": [round(bf.temperature, 4) for bf in biased],
        "final_poisoned_share": [
            round(bf.history.poisoned_share[-1], 4) if bf.history.poisoned_share else 0.0
            for bf in biased
        ],
        "bias_labels_used": False,
    }


class Poisoner:
    """The ``poisoner`` method: the patch is temperature-scaled f_B; needs x and y only."""

    kind = "poisoner"

    def __init__(self, config: BiasedModelConfig | None = None) -> None:
        self.config = config  # None: the job spec's ``poisoner`` knobs

    def fit(self, data: MethodInput, on_epoch: EpochHook | None = None) -> PoisonerPatch:
        biased = fit_biased_folds(data, self.resolved(data), on_epoch)
        return self.from_biased(data, biased)

    def resolved(self, data: MethodInput) -> BiasedModelConfig:
        """The f_B configuration for this job: the one given, else the spec's knobs."""
        return _resolve(self.config, data)

    def from_biased(self, data: MethodInput, biased: Sequence[BiasedFold]) -> PoisonerPatch:
        """The patch from already-trained f_Bs (so a job can build both serving modes from one
        set of f_B fits)."""
        from patch_training.nets.poisoned import tempered_log_probs

        k = data.log_m.shape[1]
        log_g = np.zeros((len(data.y), k), dtype=np.float32)
        fits = []
        config = self.resolved(data)
        for bf in biased:
            log_g[bf.fold.val] = tempered_log_probs(bf.log_p_val, bf.temperature)
            fits.append(_fit_result(bf, config.device))
        served = biased_ensemble(biased)
        description = _describe([bf.net for bf in biased], data.spec.arch)
        description["class"] = f"Tempered[{description['class']}]"
        description["biased_model"] = _biased_description(config, biased)
        return PoisonerPatch(
            served=served,
            out_of_fold=log_g,
            judged=_judged([bf.fold for bf in biased]),
            fits=fits,
            description=description,
            pseudo_bias=out_of_fold_predictions(len(data.y), biased),
            histories=[bf.history for bf in biased],
            temperatures=[bf.temperature for bf in biased],
        )


class PoisonerEraser:
    """The ``poisoner-eraser`` method: b̂ = f_B's out-of-fold predicted class as a pseudo bias
    label, then the Eraser (Eq. 17 targets, Eq. 18 fit) on (x, y, b̂); needs x and y only."""

    kind = "poisoner-eraser"

    def __init__(self, config: BiasedModelConfig | None = None) -> None:
        self.config = config  # None: the job spec's ``poisoner`` knobs

    def fit(self, data: MethodInput, on_epoch: EpochHook | None = None) -> PoisonerPatch:
        biased = fit_biased_folds(data, self.resolved(data), on_epoch)
        return self.from_biased(data, biased, on_epoch)

    def resolved(self, data: MethodInput) -> BiasedModelConfig:
        """The f_B configuration for this job: the one given, else the spec's knobs."""
        return _resolve(self.config, data)

    def from_biased(
        self,
        data: MethodInput,
        biased: Sequence[BiasedFold],
        on_epoch: EpochHook | None = None,
    ) -> PoisonerPatch:
        pseudo = out_of_fold_predictions(len(data.y), biased)
        if (pseudo < 0).any():
            raise ValueError("poisoner-eraser needs every row judged out of fold (cross-fitting)")
        b_hat = pseudo.astype(str)
        fitted = Eraser().fit(dataclasses.replace(data, b=b_hat), on_epoch)
        description: dict[str, Any] = dict(fitted.description)
        description["pseudo_bias"] = "f_B's out-of-fold predicted class"
        description["biased_model"] = _biased_description(self.resolved(data), biased)
        return PoisonerPatch(
            served=fitted.served,
            out_of_fold=fitted.out_of_fold,
            judged=fitted.judged,
            fits=fitted.fits,
            description=description,
            pseudo_bias=pseudo,
            histories=[bf.history for bf in biased],
            temperatures=[bf.temperature for bf in biased],
        )


# --- diagnostics: how well did f_B find the bias? -------------------------------------------


ConflictRule = Literal["assignment", "majority"]


def conflicting_rows(y: np.ndarray, b: np.ndarray, rule: ConflictRule = "assignment") -> np.ndarray:
    """Bool [N]: which rows are **bias-conflicting**, computed over exactly the rows passed in.

    Each class y is paired with one bias value r(y), its *aligned* value; row i is
    bias-conflicting when b_i ≠ r(y_i), bias-aligned otherwise.

    - ``"majority"``: r(y) = the most frequent bias value among the rows of class y (ties: every
      value tied for most frequent counts as aligned).
    - ``"assignment"`` (default): r is the one-to-one pairing of classes with bias values that
      makes the most rows aligned (Hungarian assignment on the y × b contingency table); a class
      left unpaired (more classes than values) takes its majority value. This is ``"majority"``
      whenever the classes' majority values are distinct (each class's term is then maximal on
      its own), and stays meaningful when one value is the majority of every class — on COMPAS
      African-American defendants are the majority of both outcomes, so ``"majority"`` would
      call every Caucasian row conflicting, and a model that predicted race perfectly would
      score at chance.
    """
    y = np.asarray(y)
    b = np.asarray(b).astype(str)
    classes = np.unique(y)
    aligned: dict[object, set[str]] = {}
    for c in classes:
        values, counts = np.unique(b[y == c], return_counts=True)
        aligned[c] = set(values[counts == counts.max()].tolist())
    if rule == "assignment":
        _, mapping = best_agreement(y, b)
        aligned |= {c: {v} for c, v in mapping.items()}
    elif rule != "majority":
        raise ValueError(f"unknown rule {rule!r}: expected 'assignment' or 'majority'")
    conflict = np.ones(len(y), dtype=bool)
    for c in classes:
        rows = y == c
        conflict[rows] = ~np.isin(b[rows], sorted(aligned[c]))
    return conflict


def best_agreement(pred: np.ndarray, b: np.ndarray) -> tuple[float, dict[Any, str]]:
    """Share of rows whose predicted class maps to their bias value, under the one-to-one map
    of predicted classes to bias values that maximises it (Hungarian assignment on the
    contingency table; with more classes than values, some classes map to nothing and their
    rows count as disagreeing)."""
    from scipy.optimize import linear_sum_assignment

    pred = np.asarray(pred)
    b = np.asarray(b).astype(str)
    classes, p_idx = np.unique(pred, return_inverse=True)
    values, b_idx = np.unique(b, return_inverse=True)
    table = np.zeros((len(classes), len(values)), dtype=np.int64)
    np.add.at(table, (p_idx, b_idx), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {classes[r].item(): str(values[c]) for r, c in zip(rows, cols, strict=True)}
    return float(table[rows, cols].sum() / max(len(pred), 1)), mapping


@dataclass(frozen=True)
class BiasDiscovery:
    """How well f_B's out-of-fold predictions expose the bias (percent where a share)."""

    rows: int
    misclassified_pct: float  # rows f_B gets wrong: its "bias-conflicting" set
    conflicting_pct: float | None  # true bias-conflicting rows (base rate = chance precision)
    precision_pct: float | None  # of "misclassified by f_B" against true conflicting rows
    recall_pct: float | None
    agreement_pct: float | None  # b̂ vs the true attribute, best one-to-one mapping
    agreement_of_y_pct: float | None  # the same for y itself: what b̂ = y would score
    mapping: dict[Any, str] | None  # predicted class → bias value
    rule: ConflictRule | None = None  # how the conflicting rows were defined

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: the mapping's keys (class indices) as strings."""
        out = dataclasses.asdict(self)
        if self.mapping is not None:
            out["mapping"] = {str(k): v for k, v in self.mapping.items()}
        return out


def bias_discovery(
    y: np.ndarray,
    pred: np.ndarray,
    b: np.ndarray | None = None,
    rule: ConflictRule = "assignment",
) -> BiasDiscovery:
    """Diagnostics of f_B (as the paper's Fig. 7): ``pred`` its out-of-fold predicted classes;
    rows with ``pred < 0`` (not judged) are left out. Without ``b``, only the misclassified
    share. With ``b`` (evaluation only): precision and recall of "misclassified by f_B"
    against the bias-conflicting rows (``conflicting_rows`` with ``rule``), and b̂'s agreement with b
    (``best_agreement``), next to y's own agreement with b — the score of a b̂ that merely
    copied the target."""
    y, pred = np.asarray(y), np.asarray(pred)
    keep = pred >= 0
    y, pred = y[keep], pred[keep]
    mis = pred != y
    pct = 100.0 / max(len(y), 1)
    if b is None:
        return BiasDiscovery(len(y), mis.sum() * pct, None, None, None, None, None, None)
    b = np.asarray(b)[keep]
    conflict = conflicting_rows(y, b, rule)
    hit = int((mis & conflict).sum())
    precision = 100.0 * hit / mis.sum() if mis.any() else float("nan")
    recall = 100.0 * hit / conflict.sum() if conflict.any() else float("nan")
    agreement, mapping = best_agreement(pred, b)
    of_y, _ = best_agreement(y, b)
    return BiasDiscovery(
        rows=len(y),
        misclassified_pct=float(mis.sum() * pct),
        conflicting_pct=float(conflict.sum() * pct),
        precision_pct=float(precision),
        recall_pct=float(recall),
        agreement_pct=100.0 * agreement,
        agreement_of_y_pct=100.0 * of_y,
        mapping=mapping,
        rule=rule,
    )
