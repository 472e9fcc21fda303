"""The validation gate: a version may become active only if it helps, with evidence to show it.

It judges the served artifact (the exported ONNX graph, run through ONNX Runtime, at the chosen
α) on the verdict rows, which took no part in fitting, early stopping or choosing α, and it
decides on the bootstrap intervals of ``evidence``, not on point estimates:

- EO bias (paper Eq. 20) must fall by at least ``min_bias_reduction_pp``: the *lower* bound of
  the reduction's interval must clear it;
- overall accuracy and average-group accuracy may fall by at most ``max_acc_drop_pp`` and
  ``max_avg_acc_drop_pp``: the *upper* bound of each drop's interval must stay within it.

A point estimate that already misses a threshold is rejected for that reason; one that meets
every threshold while an interval does not is rejected as "not enough evidence", with how many
verdict rows per group would roughly have decided it (intervals narrow as 1/√n). Verdict rows in
which no target class spans two bias groups cannot show a gap at all: "not enough evidence".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.jobs.spec import Evidence, GateConfig

NO_COMPARABLE_CLASS = (
    "no target class has verdict rows from two bias groups, so the EO bias cannot be measured; "
    "the calibration set needs rows of the under-represented (bias-conflicting) groups"
)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str
    rows_per_group_needed: int | None = None  # verdict rows per group for a decision


@dataclass(frozen=True)
class _Criterion:
    """One condition, as slack that must be ≥ 0: at the estimate and at the interval's worst."""

    text: str  # e.g. "EO bias reduction 14.20 [9.10, 19.30] ≥ 1.0"
    failure: str  # what a failing estimate means
    point_slack: float
    worst_slack: float


def judge(evidence: Evidence, cfg: GateConfig) -> Verdict:
    where = f"on {evidence.rows} verdict rows, {100 * evidence.confidence:g}% intervals"
    if evidence.comparable_classes == 0:
        return Verdict(False, f"not enough evidence ({where}): {NO_COMPARABLE_CLASS}")
    criteria = _criteria(evidence, cfg)
    summary = "; ".join(c.text for c in criteria)
    missed = [c for c in criteria if c.point_slack < 0]
    if missed:
        return Verdict(False, f"{missed[0].failure} ({where}): {summary}")
    unsure = [c for c in criteria if c.worst_slack < 0]
    if unsure:
        needed = _rows_needed(evidence, unsure)
        hint = f"; about {needed} verdict rows per (target, bias) group would be needed"
        return Verdict(False, f"not enough evidence ({where}): {summary}{hint}", needed)
    return Verdict(True, f"validated ({where}): {summary}")


def _criteria(evidence: Evidence, cfg: GateConfig) -> list[_Criterion]:
    eo, acc, avg = (evidence.change[m] for m in ("eo_bias", "accuracy", "avg_group_acc"))
    reduction = (-eo.estimate, -eo.high, -eo.low)  # estimate, worst (lower bound), best
    return [
        _Criterion(
            f"EO bias {evidence.raw['eo_bias'].estimate:.2f} → "
            f"{evidence.fair['eo_bias'].estimate:.2f}, reduction {_span(*reduction)} "
            f"≥ {cfg.min_bias_reduction_pp:g}",
            f"bias not reduced by {cfg.min_bias_reduction_pp:g} points",
            reduction[0] - cfg.min_bias_reduction_pp,
            reduction[1] - cfg.min_bias_reduction_pp,
        ),
        _drop("accuracy", evidence, acc.estimate, acc.low, acc.high, cfg.max_acc_drop_pp),
        _drop("avg_group_acc", evidence, avg.estimate, avg.low, avg.high, cfg.max_avg_acc_drop_pp),
    ]


def _drop(
    metric: str, evidence: Evidence, change: float, low: float, high: float, tolerance: float
) -> _Criterion:
    name = {"accuracy": "accuracy", "avg_group_acc": "avg-group accuracy"}[metric]
    raw, fair = evidence.raw[metric].estimate, evidence.fair[metric].estimate
    return _Criterion(
        f"{name} {raw:.2f} → {fair:.2f}, drop {_span(-change, -high, -low)} ≤ {tolerance:g}",
        f"{name} fell by more than {tolerance:g} points",
        tolerance + change,
        tolerance + low,  # the largest plausible drop is −(lower bound of the change)
    )


def _span(estimate: float, low: float, high: float) -> str:
    return f"{estimate:.2f} [{low:.2f}, {high:.2f}]"


def _rows_needed(evidence: Evidence, unsure: list[_Criterion]) -> int:
    """Rows per group at which each interval would shrink to its estimate's slack."""
    factor = max((c.point_slack - c.worst_slack) / max(c.point_slack, 1e-9) for c in unsure) ** 2
    per_group = sorted(evidence.group_rows.values())[len(evidence.group_rows) // 2]
    return math.ceil(per_group * factor)
