"""The held-out part of a calibration set: early stopping, α tuning and the validation gate.

Stratified by (target, bias) so that every group the gate measures is present on both sides,
even for small sets; a group with a single row stays on the training side (Eq. 17 needs it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Holdout:
    fit: np.ndarray  # row indices the patch is trained on
    val: np.ndarray  # row indices it is judged on

    def __post_init__(self) -> None:
        if len(self.fit) == 0 or len(self.val) == 0:
            raise ValueError("a calibration set needs rows on both sides of the held-out split")


def split_holdout(y: np.ndarray, b: np.ndarray, fraction: float, seed: int) -> Holdout:
    """``fraction`` of every (y, b) cell, rounded, at least one row when the cell has two."""
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
    return Holdout(fit=np.sort(np.concatenate(fit)), val=np.sort(np.concatenate(val)))
