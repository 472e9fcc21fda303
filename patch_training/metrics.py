"""Group metrics of the Eraser paper (Sec. V-A), one module for the gate, reports, the demo and
the benchmarks (the gateway's live monitoring computes its metrics in Prometheus instead).

Groups are (target, bias) pairs. Average-group and worst-group accuracy are over those groups;
equalized-odds bias (Eq. 20) is, per target class, the spread (max − min) of accuracy across
bias groups, averaged over classes — for a binary bias that is exactly |Acc(y,b0) − Acc(y,b1)|.
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
        spreads.append(max(values) - min(values))
    return GroupReport(
        avg_group_acc=float(np.mean(list(acc.values()))),
        worst_group_acc=float(min(acc.values())),
        eo_bias=float(np.mean(spreads)),
        accuracy=float(np.mean(y_true == y_pred)),
        group_acc={f"y={y},b={b}": a for (y, b), a in acc.items()},
    )
