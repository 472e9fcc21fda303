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
