"""How much the patches changed the answers: the share of flipped decisions and the size of
each correction (KL divergence of the fair from the raw distribution).

Measured on every debiased batch, attributes or not, so it is kept to a few vectorised numpy
operations per (coalesced) upstream call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

KL_BUCKETS = (1e-4, 1e-3, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def correction_kl(raw_log_probs: np.ndarray, fair_log_probs: np.ndarray) -> np.ndarray:
    """Per row KL(fair ‖ raw) = Σ_y p_fair(y) (log p_fair(y) − log p_raw(y)), in nats."""
    if np.isfinite(raw_log_probs).all():  # the usual case: one fused reduction
        return np.einsum("ij,ij->i", np.exp(fair_log_probs), fair_log_probs - raw_log_probs)
    p = np.exp(fair_log_probs)  # a class with probability 0 upstream: 0 · (−inf) counts as 0
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (fair_log_probs - raw_log_probs), 0.0)
    return terms.sum(axis=1)


class CorrectionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "eraser_debiased_decisions",
            "Decisions served by an active patch stack",
            ["model"],
            registry=registry,
        )
        self.flipped = Counter(
            "eraser_flipped_decisions",
            "Debiased decisions whose class differs from the upstream's",
            ["model"],
            registry=registry,
        )
        self.kl = Histogram(
            "eraser_correction_kl",
            "Per decision KL(fair ‖ raw) in nats: how far the patches moved the answer",
            ["model"],
            buckets=KL_BUCKETS,
            registry=registry,
        )
        self._children: dict[str, tuple[Any, Any, Any]] = {}  # labels() costs ~1 µs each

    def init_model(self, model: str) -> None:
        """Create the model's series at zero, so a window's first decisions show in rate()."""
        self._children[model] = (
            self.decisions.labels(model),
            self.flipped.labels(model),
            self.kl.labels(model),
        )

    def observe(self, model: str, raw_log_probs: np.ndarray, fair_log_probs: np.ndarray) -> None:
        if model not in self._children:
            self.init_model(model)
        decisions, flipped, kl = self._children[model]
        changed = np.argmax(raw_log_probs, axis=1) != np.argmax(fair_log_probs, axis=1)
        decisions.inc(len(changed))
        flipped.inc(int(np.count_nonzero(changed)))
        for value in correction_kl(raw_log_probs, fair_log_probs).tolist():
            kl.observe(value)
