"""The Eraser combination (docs/design.md, "The maths"), in one place for the gateway and training.

Everything works in log space on float64 so that extreme logits (±1e4) stay finite: the fair
distribution is ``softmax(ℓ − Σ_i α_i · log G_i(x))`` with ``ℓ = log_softmax(η)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.settings import OutputKind

FloatArray = np.ndarray

_TINY = np.finfo(np.float64).tiny


def log_softmax(z: FloatArray) -> FloatArray:
    """Row-wise log-softmax over the last axis, shifted by the row max (never overflows)."""
    z = np.asarray(z, dtype=np.float64)
    # ndarray methods, not np.max/np.sum: on the gateway's tiny per-request arrays the
    # functions' dispatch costs more than the arithmetic.
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_sigmoid_pair(eta: FloatArray) -> FloatArray:
    """One sigmoid logit per row → the 2-class pair (log(1−σ(η)), log σ(η)), computed stably.

    log σ(η) = −softplus(−η) and log(1−σ(η)) = −softplus(η); ``logaddexp`` is softplus
    without overflow.
    """
    eta = np.asarray(eta, dtype=np.float64).reshape(-1)
    return np.stack([-np.logaddexp(0.0, eta), -np.logaddexp(0.0, -eta)], axis=-1)


def to_log_probs(output: FloatArray, kind: OutputKind) -> FloatArray:
    """Normalise any upstream output kind to row-normalised log-probabilities [N, K]."""
    out = np.asarray(output, dtype=np.float64)
    if kind is OutputKind.SIGMOID_LOGITS:
        return log_sigmoid_pair(out)
    if kind is OutputKind.PROBABILITIES:
        # Re-normalise in log space: upstream probabilities often sum to 1 ± 1e-7 only.
        return log_softmax(np.log(np.maximum(out, _TINY)))
    # Logits and log-probabilities: log_softmax is idempotent on the latter.
    return log_softmax(out)


def fair_log_probs(
    log_p: FloatArray, log_biases: Sequence[FloatArray], alphas: Sequence[float]
) -> FloatArray:
    """Eq. 19/21: ``log_softmax(ℓ − Σ α_i · log G_i)``. Stacking order does not matter."""
    if len(log_biases) != len(alphas):
        raise ValueError(f"{len(log_biases)} patch outputs for {len(alphas)} alphas")
    z = np.asarray(log_p, dtype=np.float64)
    for log_g, alpha in zip(log_biases, alphas, strict=True):
        z = z - float(alpha) * np.asarray(log_g, dtype=np.float64)
    return log_softmax(z)


def softmax_from_log(log_p: FloatArray) -> FloatArray:
    """Probabilities from normalised log-probabilities; rows sum to 1 within float rounding."""
    p = np.exp(log_p)
    return p / p.sum(axis=-1, keepdims=True)


def from_log_probs(log_p: FloatArray, kind: OutputKind) -> FloatArray:
    """Express fair log-probabilities in the upstream's own output kind (drop-in responses).

    Logits come back as log-probabilities (valid logits of the same softmax); a sigmoid model
    gets its single logit back, log p(y=1) − log p(y=0), shape [N, 1].
    """
    if kind is OutputKind.PROBABILITIES:
        return softmax_from_log(log_p)
    if kind is OutputKind.SIGMOID_LOGITS:
        return (log_p[:, 1] - log_p[:, 0]).reshape(-1, 1)
    return log_p
