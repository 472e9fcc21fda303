"""How calibration rows are split between fitting a patch and judging it.

A ``Fold`` is one split: ``fit`` rows train a net (and stop it early), ``val`` rows are judged by
it. Cross-fitting deals every row into exactly one ``val`` part; a single held-out part is the
one-fold case. Splits are stratified by (target, bias) so that every group the gate measures is
present on both sides, even for small sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    fit: np.ndarray  # row indices the net is trained on
    val: np.ndarray  # row indices it is judged on (and early-stopped on)

    def __post_init__(self) -> None:
        if len(self.fit) == 0 or len(self.val) == 0:
            raise ValueError("a calibration set needs rows on both sides of the held-out split")


def split_holdout(y: np.ndarray, b: np.ndarray, fraction: float, seed: int) -> Fold:
    """One fold: ``fraction`` of every (y, b) cell held out, rounded, at least one row when the
    cell has two; a cell with a single row stays on the fit side (Eq. 17 needs it)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    ys, bs = np.asarray(y).astype(str), np.asarray(b).astype(str)
    cells = np.unique(np.stack([ys, bs]), axis=1)
    fit, val = [], []
    for y_value, b_value in cells.T:
        idx = np.flatnonzero((ys == y_value) & (bs == b_value))
        idx = rng.permutation(idx)
        n_val = max(1, round(len(idx) * fraction)) if len(idx) >= 2 else 0
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return Fold(fit=np.sort(np.concatenate(fit)), val=np.sort(np.concatenate(val)))


def cross_fit_folds(y: np.ndarray, b: np.ndarray, k: int, seed: int) -> list[Fold]:
    """``k`` folds, each (target, bias) cell dealt round-robin over them after a shuffle, so
    every row is judged exactly once by a patch that never saw it.

    Why not one held-out part: α and the gate are then decided on every calibration row instead
    of a quarter of them. With a few hundred rows a quarter leaves groups of a few dozen, whose
    accuracies move by 7-9 points between draws, and the α chosen there follows that noise.
    """
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {k}")
    rng = np.random.default_rng(seed)
    ys, bs = np.asarray(y).astype(str), np.asarray(b).astype(str)
    fold_of = np.empty(len(ys), dtype=np.int64)
    offset = 0
    for y_value, b_value in np.unique(np.stack([ys, bs]), axis=1).T:
        idx = rng.permutation(np.flatnonzero((ys == y_value) & (bs == b_value)))
        fold_of[idx] = (offset + np.arange(len(idx))) % k  # small cells spread over folds too
        offset += len(idx)
    rows = np.arange(len(ys))
    return [Fold(fit=rows[fold_of != f], val=rows[fold_of == f]) for f in range(k)]


def make_folds(
    y: np.ndarray, b: np.ndarray, folds: int, holdout_fraction: float, seed: int
) -> list[Fold]:
    """``folds`` ≥ 2: cross-fitting; 1: a single held-out part of ``holdout_fraction``."""
    if folds == 1:
        return [split_holdout(y, b, holdout_fraction, seed)]
    if len(y) < folds:
        raise ValueError(f"{len(y)} calibration rows cannot be split into {folds} folds")
    return cross_fit_folds(y, b, folds, seed)


@dataclass(frozen=True)
class RowPlan:
    """Which calibration rows decide what: ``tuning`` rows fit the nets (by ``folds``, indices
    into ``tuning``), stop them early and choose α; ``verdict`` rows only judge the served
    artifact, so the gate's verdict rests on rows that decided nothing."""

    tuning: np.ndarray
    verdict: np.ndarray
    folds: list[Fold]


def plan_rows(
    y: np.ndarray,
    b: np.ndarray,
    verdict_fraction: float,
    folds: int,
    holdout_fraction: float,
    seed: int,
) -> RowPlan:
    """The verdict part first (``verdict_fraction`` of every cell), then the folds of the rest."""
    outer = split_holdout(y, b, verdict_fraction, seed)
    inner = make_folds(y[outer.fit], b[outer.fit], folds, holdout_fraction, seed)
    return RowPlan(tuning=outer.fit, verdict=outer.val, folds=inner)
