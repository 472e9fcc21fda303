"""Every peer's decisions on a test split, fitted on the same calibration rows and the same
black-box answers as the Eraser's job.

Attribute-aware peers (ThresholdOptimizer, error-parity) read each test row's protected
attribute; the attribute-blind LinearPost reads what the Eraser reads — the inputs and the black
box's answers — and is the yardstick for a product whose point is "no attribute at prediction
time". All need a binary target; on other tasks there are no peer rows.
"""

from __future__ import annotations

import numpy as np

from bench.quality.datasets import Table
from bench.quality.linearpost import LinearPostBlind, blind_features
from bench.quality.peers import error_parity, threshold_optimizer

RELAXED_EO = 0.05  # the relaxed tolerance of both relaxed peers (an EO gap of 5 points)
ATTRIBUTE_AWARE = frozenset({"fairlearn_to", "error_parity", "error_parity_relaxed"})
PEERS = ("fairlearn_to", "error_parity", "error_parity_relaxed", "linearpost_blind",
         "linearpost_blind_relaxed")  # fmt: skip


def peer_decisions(
    calib: Table, calib_probs: np.ndarray, test: Table, test_probs: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """``{peer: class index per test row}``; empty for a target that is not binary."""
    if calib_probs.shape[1] != 2:
        return {}
    aware = {
        "fairlearn_to": threshold_optimizer(
            calib_probs, calib.y, calib.b, test_probs, test.b, seed
        ),
        **{
            name: error_parity(calib_probs, calib.y, calib.b, test_probs, test.b, tol, seed)
            for name, tol in (("error_parity", 0.0), ("error_parity_relaxed", RELAXED_EO))
        },
    }
    fit_x = blind_features(calib.X, _log(calib_probs))
    test_x = blind_features(test.X, _log(test_probs))
    blind = {
        name: LinearPostBlind(tolerance=tol, seed=seed).fit(fit_x, calib.y, calib.b).predict(test_x)
        for name, tol in (("linearpost_blind", 0.0), ("linearpost_blind_relaxed", RELAXED_EO))
    }
    return {name: np.asarray(pred, dtype=np.int64) for name, pred in (aware | blind).items()}


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))
