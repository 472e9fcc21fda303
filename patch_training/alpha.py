"""Choosing the patch strength α on calibration rows judged out of fold (Eq. 19 with α).

α = 1 is the paper's rule; a distilled patch is only an estimate of the bias, so a smaller or
larger α can trade bias against accuracy better. The rule, applied to the tuning rows judged out
of fold (never to the verdict rows): among the α whose equalized-odds bias is not above the
α = 1 value and whose accuracy and average-group accuracy are within the validation gate's
tolerances of the raw model's, take the best worst-group accuracy; ties go to the better
average-group accuracy, then to the α closest to 1. When no α qualifies, α = 1 (and the gate
will say why it fails). The whole curve is kept for the report, with a bootstrap band.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from patch_training.bootstrap import (
    Cells,
    metric_intervals,
    observed_accuracies,
    resampled_accuracies,
)
from patch_training.metrics import GroupReport, group_report
from service.eraser_math import fair_log_probs
from service.jobs.spec import GateConfig

_EPS = 1e-9


@dataclass(frozen=True)
class AlphaPoint:
    alpha: float
    report: GroupReport
    band: dict[str, tuple[float, float]]  # metric → bootstrap interval, percent


@dataclass(frozen=True)
class AlphaChoice:
    alpha: float
    curve: list[AlphaPoint]
    rule: str = (
        "max worst-group accuracy s.t. EO bias <= its alpha=1 value and accuracy and avg-group "
        "accuracy within the gate's tolerances of raw (tuning rows, out of fold)"
    )

    def at(self, alpha: float) -> GroupReport:
        return next(p.report for p in self.curve if np.isclose(p.alpha, alpha))


def alpha_curve(
    log_m: np.ndarray,
    log_g: np.ndarray,
    y: np.ndarray,
    b: np.ndarray,
    grid: Sequence[float],
    gate: GateConfig,
    seed: int = 0,
) -> list[AlphaPoint]:
    """Group metrics of ``argmax(ℓ − α log G)`` for every α in the grid (0 and 1 always in),
    each with its bootstrap band (``gate.confidence``, ``gate.bootstrap_draws``)."""
    alphas = sorted({0.0, 1.0, *(float(a) for a in grid)})
    cells = Cells.of(y, b)
    points = []
    for alpha in alphas:
        pred = np.argmax(fair_log_probs(log_m, [log_g], [alpha]), axis=1)
        band = _band(cells, pred == y, gate, seed)
        points.append(AlphaPoint(alpha, group_report(y, pred, b), band))
    return points


def _band(
    cells: Cells, correct: np.ndarray, gate: GateConfig, seed: int
) -> dict[str, tuple[float, float]]:
    """Each metric's interval at one α, as the gate computes intervals (``bootstrap.interval``)."""
    acc = resampled_accuracies(cells, {"fair": correct}, gate.bootstrap_draws, seed)["fair"]
    observed = observed_accuracies(cells, correct)
    bands = metric_intervals(cells, observed, acc, gate.confidence)
    return {m: (iv.low, iv.high) for m, iv in bands.items()}


def choose_alpha(curve: list[AlphaPoint], gate: GateConfig) -> AlphaChoice:
    """Apply the module's rule to a curve from ``alpha_curve``."""
    at_one = next(p.report for p in curve if p.alpha == 1.0)
    raw = next(p.report for p in curve if p.alpha == 0.0)
    avg_floor = raw.avg_group_acc - gate.max_avg_acc_drop_pp / 100
    acc_floor = raw.accuracy - gate.max_acc_drop_pp / 100
    allowed = [
        p
        for p in curve
        if p.report.eo_bias <= at_one.eo_bias + _EPS
        and p.report.avg_group_acc >= avg_floor - _EPS
        and p.report.accuracy >= acc_floor - _EPS
    ]
    if not allowed:
        return AlphaChoice(alpha=1.0, curve=curve)
    best = max(
        allowed,
        key=lambda p: (p.report.worst_group_acc, p.report.avg_group_acc, -abs(p.alpha - 1.0)),
    )
    return AlphaChoice(alpha=best.alpha, curve=curve)
