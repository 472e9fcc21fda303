"""FMD's maths on a linear top layer (Chen et al. 2023, Sec. 3.2-3.3), in numpy float64.

The top layer is a multinomial logistic regression on penultimate features h (a constant 1
appended: h̃ = [h, 1]); θ = W [K, d+1], p(x) = softmax(W h̃(x)). It minimises

    F(W) = Σ_i KL(t_i ‖ p(x_i)) + (λ·n / 2) ‖W‖²            (t_i: the black box's answer)

so its Hessian, exactly, is H = Σ_i (diag p_i − p_i p_iᵀ) ⊗ h̃_i h̃_iᵀ + λ·n·I (the same for
any targets: the cross-entropy's Hessian does not depend on them). With it:

- counterfactual bias, smooth: B(W) = mean_i mean_m φ(p_ŷ(x_i) − p_ŷ(x̄_im)), φ(d) =
  √(d² + ε²) − ε (|d| smoothed at 0), ŷ the decision on x_i, held fixed;
- the influence of a row z = (x, target) on B: I(z) = −∇B(W)ᵀ H⁻¹ ∇L(z, W), with L the
  cross-entropy to the target (positive: up-weighting z raises B, so z is harmful);
- one Newton step replacing the K most harmful rows z_k by their counterfactuals
  z̄_k = (x̄_k, the same target):  W' = W + H⁻¹ Σ_k (∇L(z_k) − mean_m ∇L(z̄_km)).

Sign: H is the Hessian of the *summed* objective, so removing z moves the optimum by
+H⁻¹∇L(z) (a Newton step on F − L(z) from W, whose gradient there is −∇L(z)); adding z̄ moves
it by −H⁻¹∇L(z̄). This is the paper's θ_new = θ + Σ_k H⁻¹ ∇L(z_k) for removal, and the
counterfactual replacement of its Eq. 8.

Vectors over θ are flattened row-major: class c's weights are entries c·(d+1) … (c+1)·(d+1)−1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.eraser_math import log_softmax

SMOOTH_EPS = 1e-3  # ε of the smooth |d| in B (a probability difference)


def with_bias(h: np.ndarray) -> np.ndarray:
    """h̃ = [h, 1] over the last axis, float64."""
    h = np.asarray(h, dtype=np.float64)
    return np.concatenate([h, np.ones((*h.shape[:-1], 1))], axis=-1)


def probs(w: np.ndarray, ht: np.ndarray) -> np.ndarray:
    """softmax(W h̃) for h̃ of any leading shape: [..., K]."""
    return np.exp(log_softmax(ht @ w.T))


def objective(w: np.ndarray, ht: np.ndarray, t: np.ndarray, l2: float) -> float:
    """F(W) = Σ KL(t ‖ p) + (λ·n/2)‖W‖² (KL with 0·log 0 = 0)."""
    log_p = log_softmax(ht @ w.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)
    return float((own - t * log_p).sum() + 0.5 * l2 * len(ht) * (w**2).sum())


def gradient(w: np.ndarray, ht: np.ndarray, t: np.ndarray, l2: float) -> np.ndarray:
    """∇F(W): Σ (p_i − t_i) ⊗ h̃_i + λ·n·W, [K, d+1]."""
    return (probs(w, ht) - t).T @ ht + l2 * len(ht) * w


def hessian(w: np.ndarray, ht: np.ndarray, l2: float) -> np.ndarray:
    """H = Σ_i (diag p_i − p_i p_iᵀ) ⊗ h̃_i h̃_iᵀ + λ·n·I, [K(d+1), K(d+1)]."""
    p = probs(w, ht)
    n, k = p.shape
    dim = ht.shape[1]
    out = np.empty((k, dim, k, dim))
    for c in range(k):
        for c2 in range(c, k):
            weight = p[:, c] * ((c == c2) - p[:, c2])  # [n]
            block = (ht * weight[:, None]).T @ ht
            out[c, :, c2, :] = block
            out[c2, :, c, :] = block.T
    h = out.reshape(k * dim, k * dim)
    h[np.diag_indices_from(h)] += l2 * n
    return h


def fit_top_layer(
    ht: np.ndarray,
    t: np.ndarray,
    l2: float,
    w0: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-9,
) -> np.ndarray:
    """argmin F by Newton's method with backtracking (F is strictly convex): the top layer at
    which H is the exact Hessian and the influence maths holds. Starts from ``w0`` (the
    distilled head) or zeros."""
    k, dim = t.shape[1], ht.shape[1]
    w = np.zeros((k, dim)) if w0 is None else np.asarray(w0, dtype=np.float64).copy()
    value = objective(w, ht, t, l2)
    scale = max(len(ht), 1)
    for _ in range(max_iter):
        g = gradient(w, ht, t, l2)
        if np.abs(g).max() / scale < tol:
            break
        step = np.linalg.solve(hessian(w, ht, l2), g.ravel()).reshape(k, dim)
        size = 1.0
        while size > 1e-8:
            trial = w - size * step
            trial_value = objective(trial, ht, t, l2)
            if trial_value <= value:
                break
            size /= 2
        else:
            break  # no descent along the Newton direction: at the optimum up to rounding
        w, value = trial, trial_value
    return w


def smooth_bias(w: np.ndarray, ht: np.ndarray, ht_cf: np.ndarray, decision: np.ndarray) -> float:
    """Smooth B: mean_i mean_m φ(p_ŷ(x_i) − p_ŷ(x̄_im)); ``ht_cf`` [N, M, d+1]."""
    d = _differences(w, ht, ht_cf, decision)[0]
    return float((np.sqrt(d**2 + SMOOTH_EPS**2) - SMOOTH_EPS).mean())


def _differences(
    w: np.ndarray, ht: np.ndarray, ht_cf: np.ndarray, decision: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, p_cf = probs(w, ht), probs(w, ht_cf)  # [N, K], [N, M, K]
    rows = np.arange(len(ht))
    d = p[rows, decision][:, None] - p_cf[rows, :, decision]  # [N, M]
    return d, p, p_cf


def bias_gradient(
    w: np.ndarray, ht: np.ndarray, ht_cf: np.ndarray, decision: np.ndarray
) -> np.ndarray:
    """∇_W of ``smooth_bias`` (ŷ fixed), [K, d+1]. ∂p_c/∂W = p_c (e_c − p) ⊗ h̃."""
    d, p, p_cf = _differences(w, ht, ht_cf, decision)
    n, m = d.shape
    k = p.shape[1]
    rows = np.arange(n)
    weight = d / np.sqrt(d**2 + SMOOTH_EPS**2) / (n * m)  # φ'(d) / (N·M)
    onehot = np.eye(k)[decision]  # [N, K]
    own = p[rows, decision][:, None] * (onehot - p)  # [N, K]: ∂p_ŷ/∂z
    grad = (own * weight.sum(axis=1)[:, None]).T @ ht
    cf = p_cf[rows, :, decision][:, :, None] * (onehot[:, None, :] - p_cf)  # [N, M, K]
    grad -= np.einsum("nmk,nm,nmd->kd", cf, weight, ht_cf)
    return grad


def row_gradients(w: np.ndarray, ht: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """∇_W L(z) of every row, L the cross-entropy to ``targets`` [N, K] (one-hot or soft):
    (p − target) ⊗ h̃, [N, K, d+1]."""
    return (probs(w, ht) - targets)[:, :, None] * ht[:, None, :]


def counterfactual_gradients(w: np.ndarray, ht_cf: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """mean_m ∇_W L(x̄_m, target) of every row (its counterfactuals keep its target)."""
    residual = probs(w, ht_cf) - targets[:, None, :]  # [N, M, K]
    return np.einsum("nmk,nmd->nkd", residual, ht_cf) / ht_cf.shape[1]


@dataclass(frozen=True)
class Unlearning:
    """Influence of every fit row and the Newton steps of a K grid."""

    influence: np.ndarray  # [n]: I(z) on B; > 0 harmful
    order: np.ndarray  # [n]: rows, most harmful first
    harmful: int  # rows with I(z) > 0
    ks: list[int]  # rows replaced per step (capped at ``harmful``)
    steps: np.ndarray  # [len(ks), K, d+1]: W' − W per K
    bias_gradient: np.ndarray  # [K, d+1]


def unlearn(
    w: np.ndarray,
    ht: np.ndarray,
    ht_cf: np.ndarray,
    targets: np.ndarray,
    l2: float,
    ks: Sequence[int],
) -> Unlearning:
    """Influence of each row (h̃ [n, d+1], its counterfactuals [n, M, d+1], its loss targets
    [n, K]) on the smooth B of the same rows, and for each K of ``ks`` the Newton step that
    replaces the K most harmful rows by their counterfactuals (module docstring)."""
    decision = np.argmax(ht @ w.T, axis=1)
    h = hessian(w, ht, l2)
    grad_b = bias_gradient(w, ht, ht_cf, decision)
    v = np.linalg.solve(h, grad_b.ravel()).reshape(w.shape)  # H⁻¹ ∇B
    g = row_gradients(w, ht, targets)
    influence = -np.einsum("nkd,kd->n", g, v)
    order = np.argsort(-influence, kind="stable")
    harmful = int((influence > 0).sum())
    diff = g - counterfactual_gradients(w, ht_cf, targets)  # ∇L(z) − ∇L(z̄)
    cumulative = np.concatenate([np.zeros((1, *w.shape)), np.cumsum(diff[order], axis=0)])
    capped = [int(min(max(k, 0), harmful)) for k in ks]
    rhs = cumulative[capped].reshape(len(capped), -1).T  # [P, len(ks)]
    steps = np.linalg.solve(h, rhs).T.reshape(len(capped), *w.shape)
    return Unlearning(influence, order, harmful, capped, steps, grad_b)
