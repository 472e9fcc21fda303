"""The Eraser combination (DESIGN.md "The math"), in one place for the gateway and training.

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


def distillation_targets(
    log_m: FloatArray,
    y: np.ndarray,
    b: np.ndarray,
    reference: tuple[FloatArray, np.ndarray, np.ndarray] | None = None,
) -> FloatArray:
    """Eq. 17 rule-distillation targets t(x), with per-(class, bias) group means: O(N).

    ``t(x) = softmax((1/k)(log M(x) + Σ_{i≠y_x} mean_{x'∈S_{i,b_x}} log M(x')))``.

    The group means come from ``reference`` (log M, y, b of another set) when given, so that
    held-out targets reuse the training part's means and no held-out label leaks into training.

    Fallback for an empty S_{i,b} (no sample of class i with bias b, or a bias value the
    reference never saw): use the mean over all samples of class i, S_i, whatever their bias —
    the contrast then carries less of b's shortcut but still cancels the class evidence. If
    class i has no sample at all, its term is dropped and the average is over the terms
    present (k becomes their count).
    """
    log_m = np.asarray(log_m, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    ref_m, ref_y, ref_b = reference if reference is not None else (log_m, y, b)
    k = log_m.shape[1]
    groups, ref_idx = np.unique(np.asarray(ref_b), return_inverse=True)
    b_idx = _bias_index(groups, np.asarray(b))  # unseen values → the extra, empty slot
    means = group_means(np.asarray(ref_m, np.float64), np.asarray(ref_y), ref_idx, k, len(groups))
    present = ~np.isnan(means[:, :, 0])  # [k, n_bias + 1]
    own = present[y, b_idx]
    total = np.nansum(means, axis=0)  # Σ_i mean S_{i,b}: [n_bias + 1, k]
    contrast = total[b_idx] - np.where(own[:, None], means[y, b_idx], 0.0)
    n_terms = 1 + present.sum(axis=0)[b_idx] - own  # log M(x) itself + the other classes
    return np.exp(log_softmax((log_m + contrast) / n_terms[:, None]))


def _bias_index(groups: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Position of each value of ``b`` in the sorted ``groups``; ``len(groups)`` if absent."""
    pos = np.clip(np.searchsorted(groups, b), 0, len(groups) - 1)
    return np.where(groups[pos] == b, pos, len(groups))


def group_means(
    log_m: FloatArray, y: np.ndarray, b_idx: np.ndarray, k: int, n_bias: int
) -> FloatArray:
    """Mean log M over S_{i,b} for every class i and bias index b (plus one empty slot for
    unseen bias values), with the S_i fallback; NaN where class i has no sample at all."""
    sums = np.zeros((k, n_bias + 1, k))
    counts = np.zeros((k, n_bias + 1))
    np.add.at(sums, (y, b_idx), log_m)
    np.add.at(counts, (y, b_idx), 1.0)
    class_counts = counts.sum(axis=1)  # |S_i|
    class_means = np.divide(
        sums.sum(axis=1),
        class_counts[:, None],
        out=np.full((k, k), np.nan),
        where=class_counts[:, None] > 0,
    )
    means = np.divide(
        sums, counts[:, :, None], out=np.zeros_like(sums), where=counts[:, :, None] > 0
    )
    empty = counts == 0
    means[empty] = np.broadcast_to(class_means[:, None, :], means.shape)[empty]
    return means
