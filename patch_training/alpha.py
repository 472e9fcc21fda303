"""Choosing the patch strength α on calibration rows judged out of fold (Eq. 19 with α).

α = 1 is the paper's rule; a distilled patch is only an estimate of the bias, so a smaller or
larger α can trade bias against accuracy better. The rule, applied to the tuning rows judged out
of fold (never to the verdict rows): among the α whose equalized-odds bias is not above the
α = 1 value and whose accuracy and average-group accuracy are within the validation gate's
tolerances of the raw model's, take the best worst-group accuracy; ties go to the better
average-group accuracy, then to the α closest to 1. When no α qualifies, α = 1 (and the gate
will say why it fails). The whole curve is kept for the report, with a bootstrap band.

Class offset (``TrainingJobSpec.class_offset``). Eq. 17's targets carry the black box's lean
to the majority class along with the shortcut, so log G is partly a shrunken copy of the model's
own class evidence and its prior: subtracting it moves every group's decisions towards the
minority class (on Adult it raised both sexes' true- *and* false-positive rates and widened the
false-positive gap). A per-class offset δ(α), fitted on the same tuning rows without their
labels (``share_offset``), makes ``argmax(ℓ − α log G + δ)`` give each class the share of rows
the raw model gives it: the patch then moves decisions between groups, not between classes.
``raw_shares`` judges every α with its offset, ``none`` without, ``auto`` both (the rule picks
among all points, with the EO cap taken from the offset curve's α = 1). The chosen δ is baked
into the exported graph (``nets.ShiftedPatch``: log G − δ/α), so serving is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from patch_training.bootstrap import (
    Cells,
    metric_intervals,
    observed_accuracies,
    resampled_accuracies,
)
from patch_training.metrics import GroupReport, group_report
from service.eraser_math import fair_log_probs
from service.jobs.spec import ClassOffset, GateConfig

_EPS = 1e-9
_SWEEPS = 50  # coordinate sweeps of ``share_offset`` (binary targets need one)


@dataclass(frozen=True)
class AlphaPoint:
    alpha: float
    report: GroupReport
    band: dict[str, tuple[float, float]]  # metric → bootstrap interval, percent
    offset: tuple[float, ...] | None = None  # per-class δ added to ℓ − α log G; None: no offset


@dataclass(frozen=True)
class AlphaChoice:
    alpha: float
    curve: list[AlphaPoint]
    rule: str = (
        "max worst-group accuracy s.t. EO bias <= its alpha=1 value (the class-offset curve's "
        "when there is one) and accuracy and avg-group accuracy within the gate's tolerances "
        "of raw (tuning rows, out of fold)"
    )
    offset: tuple[float, ...] | None = field(default=None)  # the chosen point's δ

    def at(self, alpha: float, offset: bool = False) -> GroupReport:
        """The report at ``alpha``, with or without the class offset."""
        return next(
            p.report
            for p in self.curve
            if np.isclose(p.alpha, alpha) and (p.offset is not None) == offset
        )

    @property
    def chosen(self) -> GroupReport:
        return self.at(self.alpha, offset=self.offset is not None)

    @property
    def patch_shift(self) -> np.ndarray | None:
        """δ/α: what the exported graph subtracts from log G so that serving it at α adds δ."""
        if self.offset is None or self.alpha <= 0:
            return None
        return np.asarray(self.offset, dtype=np.float64) / self.alpha


def share_offset(log_m: np.ndarray, log_g: np.ndarray, alpha: float) -> np.ndarray:
    """Per-class δ such that ``argmax(ℓ − α log G + δ)`` predicts every class on as many rows
    as the raw ``argmax ℓ`` does (uses no labels). Binary targets: one quantile; K classes:
    coordinate sweeps, each setting one class's δ to the midpoint between the margins that give
    it its share. Centred (only differences between classes matter); zero at α = 0."""
    log_m = np.asarray(log_m, dtype=np.float64)
    k = log_m.shape[1]
    delta = np.zeros(k)
    if alpha == 0 or len(log_m) == 0:
        return delta
    s = log_m - alpha * np.asarray(log_g, dtype=np.float64)
    target = np.bincount(np.argmax(log_m, axis=1), minlength=k)
    n = len(s)
    for _ in range(_SWEEPS):
        for c in range(k):
            margin = np.sort(np.delete(s + delta, c, axis=1).max(axis=1) - s[:, c])
            t = target[c]
            if t == 0:
                delta[c] = margin[0] - 1.0
            elif t == n:
                delta[c] = margin[-1] + 1.0
            else:
                delta[c] = 0.5 * (margin[t - 1] + margin[t])
        if np.array_equal(np.bincount(np.argmax(s + delta, axis=1), minlength=k), target):
            break
    return delta - delta.mean()


def alpha_curve(
    log_m: np.ndarray,
    log_g: np.ndarray,
    y: np.ndarray,
    b: np.ndarray,
    grid: Sequence[float],
    gate: GateConfig,
    seed: int = 0,
    class_offset: ClassOffset = "none",
) -> list[AlphaPoint]:
    """Group metrics of ``argmax(ℓ − α log G)`` for every α in the grid (0 and 1 always in),
    each with its bootstrap band (``gate.confidence``, ``gate.bootstrap_draws``); with a class
    offset (``raw_shares``, or ``auto`` for both), of ``argmax(ℓ − α log G + δ(α))`` too, δ(α)
    from ``share_offset`` on these same rows. α = 0 is the raw model, once, without offset."""
    alphas = sorted({0.0, 1.0, *(float(a) for a in grid)})
    cells = Cells.of(y, b)
    points = []
    for alpha in alphas:
        fair = fair_log_probs(log_m, [log_g], [alpha])
        variants: list[np.ndarray | None] = []
        if class_offset != "raw_shares" or alpha == 0:
            variants.append(None)
        if class_offset != "none" and alpha > 0:
            variants.append(share_offset(log_m, log_g, alpha))
        for delta in variants:
            pred = np.argmax(fair if delta is None else fair + delta, axis=1)
            band = _band(cells, pred == y, gate, seed)
            offset = None if delta is None else tuple(float(d) for d in delta)
            points.append(AlphaPoint(alpha, group_report(y, pred, b), band, offset))
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
    """Apply the module's rule to a curve from ``alpha_curve``. The EO cap is α = 1 with the
    class offset when the curve has offset points, else plain α = 1."""
    ones = [p for p in curve if p.alpha == 1.0]
    at_one = next((p for p in ones if p.offset is not None), ones[0]).report
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
        fallback = next((p for p in ones if p.offset is not None), ones[0])
        return AlphaChoice(alpha=1.0, curve=curve, offset=fallback.offset)
    best = max(
        allowed,
        key=lambda p: (p.report.worst_group_acc, p.report.avg_group_acc, -abs(p.alpha - 1.0)),
    )
    return AlphaChoice(alpha=best.alpha, curve=curve, offset=best.offset)
