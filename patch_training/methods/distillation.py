"""Eraser rule distillation targets (paper Eq. 17), with per-(class, bias) group means: O(N).

Training only: the gateway never builds targets, so this lives with training and uses the
gateway's log-softmax from ``service.eraser_math``.
"""

from __future__ import annotations

import numpy as np

from service.eraser_math import FloatArray, log_softmax


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
