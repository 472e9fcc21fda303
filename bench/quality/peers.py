"""Side-by-side rows from other post-processing debiasers, fitted on the same calibration set.

fairlearn's ThresholdOptimizer (Hardt et al.'s equalized-odds post-processing, the paper's
"Equalodds" row) picks per-group randomised thresholds on the black box's scores. It needs the
sensitive attribute of every *test* instance at prediction time, which the Eraser does not, and
it handles binary targets only; the tables say both.
"""

from __future__ import annotations

import warnings

import numpy as np
from fairlearn.postprocessing import ThresholdOptimizer
from sklearn.base import BaseEstimator, ClassifierMixin


class ScoresAsEstimator(ClassifierMixin, BaseEstimator):
    """A "prefit" estimator whose inputs already are the black box's class probabilities.

    ThresholdOptimizer only ever looks at an estimator's scores, so handing it the deployed
    model's own answers (from the gateway's ``raw_probabilities``) is exactly post-processing
    a black box, with no copy of the model in the benchmark.
    """

    def fit(self, X: np.ndarray, y: np.ndarray) -> ScoresAsEstimator:
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(np.asarray(X), axis=1)


def threshold_optimizer(
    calib_probs: np.ndarray,
    calib_y: np.ndarray,
    calib_b: np.ndarray,
    test_probs: np.ndarray,
    test_b: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Equalized-odds thresholds fitted on calibration scores; test decisions (0/1)."""
    if calib_probs.shape[1] != 2:
        raise ValueError("ThresholdOptimizer handles binary targets only")
    estimator = ScoresAsEstimator().fit(calib_probs, calib_y)
    to = ThresholdOptimizer(
        estimator=estimator,
        constraints="equalized_odds",
        prefit=True,
        predict_method="predict_proba",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        to.fit(calib_probs, calib_y, sensitive_features=calib_b)
        return np.asarray(to.predict(test_probs, sensitive_features=test_b, random_state=seed))


def error_parity(
    calib_probs: np.ndarray,
    calib_y: np.ndarray,
    calib_b: np.ndarray,
    test_probs: np.ndarray,
    test_b: np.ndarray,
    tolerance: float,
    seed: int,
) -> np.ndarray:
    """Relaxed equalized-odds thresholds (error-parity) fitted on calibration scores; test 0/1.

    error-parity's ``RelaxedThresholdOptimizer`` (Cruz & Hardt, "Unprocessing seven years of
    algorithmic fairness") is Hardt et al.'s post-processing with the equality relaxed: it
    solves an LP for the cheapest point on each group's ROC convex hull such that any two
    groups' (FPR, TPR) points are at most ``tolerance`` apart in l-inf norm, i.e. an
    equalized-odds gap of at most ``tolerance`` *on the calibration set* (0 is exact EO,
    0.05 allows 5 points), then realises each point as a randomised mix of two thresholds
    (and, inside the hull, a coin on the ROC diagonal). Like ThresholdOptimizer it is
    attribute-aware: every test instance's group picks its thresholds, which the Eraser does
    not need; and it handles binary targets only. The score is the black box's positive-class
    probability, so this post-processes the deployed model's own answers.
    """
    if calib_probs.shape[1] != 2 or not np.isin(calib_y, (0, 1)).all():
        raise ValueError("error-parity's RelaxedThresholdOptimizer handles binary targets only")
    # Imported here: it pulls in cvxpy, which nothing else in the benchmark needs.
    from error_parity import RelaxedThresholdOptimizer

    # It wants groups numbered 0..k-1; test groups must be ones it fitted thresholds for.
    groups, calib_g = np.unique(calib_b, return_inverse=True)
    test_g = np.searchsorted(groups, test_b).clip(max=len(groups) - 1)
    if not np.array_equal(groups[test_g], np.asarray(test_b)):
        raise ValueError("test rows carry a group absent from the calibration set")

    rto = RelaxedThresholdOptimizer(
        predictor=lambda probs: np.asarray(probs, dtype=np.float64)[:, 1],
        constraint="equalized_odds",
        tolerance=tolerance,
        seed=seed,  # the generator of each group's mix of thresholds, drawn at prediction
    )
    # Its coin on the ROC diagonal (a target strictly inside a group's hull) draws from numpy's
    # global generator instead, so seed that too for repeatable rows, and put it back after.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        rto.fit(calib_probs, np.asarray(calib_y, dtype=int), group=calib_g)
        return np.asarray(rto.predict(test_probs, group=test_g)).astype(int)
    finally:
        np.random.set_state(state)
