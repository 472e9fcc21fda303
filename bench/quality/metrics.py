"""One row's numbers: the product's group metrics (``patch_training.metrics``, the paper's
definitions) plus fairlearn's equalized-odds and demographic-parity differences as a
cross-check from an independent implementation (binary targets only: fairlearn has no
multi-class form of either)."""

from __future__ import annotations

import numpy as np
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from patch_training.metrics import group_report


def row_metrics(y: np.ndarray, pred: np.ndarray, b: np.ndarray) -> dict[str, object]:
    """Percentages: avg / worst group accuracy, EO bias (Eq. 20), accuracy, fairlearn's EOD and
    DPD (None for multi-class), and every (target, bias) group's accuracy."""
    report = group_report(y, pred, b)
    pct = report.as_percent()
    binary = len(np.unique(y)) == 2
    eod = equalized_odds_difference(y, pred, sensitive_features=b) if binary else None
    dpd = demographic_parity_difference(y, pred, sensitive_features=b) if binary else None
    return {
        "avg": pct["avg_group_acc"],
        "worst": pct["worst_group_acc"],
        "eo": pct["eo_bias"],
        "accuracy": pct["accuracy"],
        "eod_fairlearn": None if eod is None else 100 * float(eod),
        "dpd_fairlearn": None if dpd is None else 100 * float(dpd),
        "groups": {k: 100 * v for k, v in report.group_acc.items()},
    }


def eo_noise_floor(
    y: np.ndarray, pred: np.ndarray, b: np.ndarray, sims: int = 4000, seed: int = 0
) -> float:
    """The EO bias (%) a classifier with *equal* true accuracy in every bias group would still
    show on this test split, from sampling noise alone: each (class, group) accuracy is drawn
    binomially around the class's pooled accuracy, with the split's group sizes.

    |Acc(y, b0) − Acc(y, b1)| is biased upwards by noise, and averaging seeds does not remove a
    bias, so a small test split puts a floor under any EO figure. Valid for disjoint groups
    (people), not for Colored MNIST's test set, where every digit appears in every colour.
    """
    rng = np.random.default_rng(seed)
    spreads = []
    for cls in np.unique(y):
        in_class = y == cls
        p = float(np.mean(pred[in_class] == cls))
        sizes = np.array([np.sum(in_class & (b == g)) for g in np.unique(b[in_class])])
        acc = rng.binomial(sizes, p, size=(sims, len(sizes))) / sizes
        spreads.append(acc.max(axis=1) - acc.min(axis=1))
    return 100 * float(np.mean(np.mean(spreads, axis=0)))
