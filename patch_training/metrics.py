"""Group metrics of the Eraser paper (Sec. V-A), one module for the gate, reports, the demo and
the benchmarks (the gateway's live monitoring computes its metrics in Prometheus instead).

Groups are (target, bias) pairs. Average-group and worst-group accuracy are over those groups;
equalized-odds bias (Eq. 20) is, per target class, the spread (max − min) of accuracy across
bias groups, averaged over classes — for a binary bias that is exactly |Acc(y,b0) − Acc(y,b1)|.
Only classes whose rows span two or more bias groups are comparable: a class seen in one group
only says nothing about a gap, and counting it as a spread of 0 would dilute the mean (a small
verdict split of a strongly biased set often has such classes). With no comparable class the
EO bias is 0 and ``comparable_classes`` is 0: callers that decide on it must check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupReport:
    avg_group_acc: float
    worst_group_acc: float
    eo_bias: float
    accuracy: float
    group_acc: dict[str, float]
    comparable_classes: int  # classes with rows from ≥ 2 bias groups (what EO averages over)

    def as_percent(self) -> dict[str, float]:
        return {
            "avg_group_acc": 100 * self.avg_group_acc,
            "worst_group_acc": 100 * self.worst_group_acc,
            "eo_bias": 100 * self.eo_bias,
            "accuracy": 100 * self.accuracy,
        }


def group_report(y_true: np.ndarray, y_pred: np.ndarray, bias: np.ndarray) -> GroupReport:
    y_true, y_pred, bias = (np.asarray(a) for a in (y_true, y_pred, bias))
    acc: dict[tuple, float] = {}
    for y in np.unique(y_true):
        for b in np.unique(bias):
            mask = (y_true == y) & (bias == b)
            if mask.any():
                acc[(y, b)] = float(np.mean(y_pred[mask] == y))
    spreads = []
    for y in np.unique(y_true):
        values = [a for (yy, _), a in acc.items() if yy == y]
        if len(values) >= 2:
            spreads.append(max(values) - min(values))
    return GroupReport(
        avg_group_acc=float(np.mean(list(acc.values()))),
        worst_group_acc=float(min(acc.values())),
        eo_bias=float(np.mean(spreads)) if spreads else 0.0,
        accuracy=float(np.mean(y_true == y_pred)),
        group_acc={f"y={y},b={b}": a for (y, b), a in acc.items()},
        comparable_classes=len(spreads),
    )
