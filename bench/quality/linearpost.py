"""LinearPost, attribute-blind, for equalized odds: a peer that, like the Eraser, needs no
sensitive attribute at prediction time.

Source: R. Xian and H. Zhao, "Optimal Group Fair Classifiers from Linear Post-Processing"
(arXiv 2405.04025; v2 is titled "A Unified Post-Processing Framework for Group Fairness in
Classification"), which generalises Xian, Yin and Zhao, "Fair and Optimal Classification via
Post-Processing" (ICML 2023). The authors' code (github.com/uiuctml/fair-classification) was
read to pin the details down; nothing here is copied from it. Only the abstract and that code
were readable when this was written, so the parts below are named by what they are, not by the
paper's equation numbers.

What is implemented, for K classes, groups a and calibration rows x_1 … x_n:

1. *Group predictor* (attribute-blind, the paper's p(A, Y | X)): a multinomial logistic
   regression of the joint label (a, y) on standardised features (the inputs plus the black
   box's log-probabilities, see ``blind_features``). It is cross-fitted: the LP sees
   out-of-fold probabilities and each test row is scored by one fold model drawn at random,
   because in-sample probabilities are over-confident and the method's fairness guarantee
   rests on the group predictor being calibrated, not on it being accurate.
2. *Fairness "features"*: γ_{a,y}(x) = p(a, y | x) / p̄(a, y) with p̄ the mean of p(a, y | x_i)
   over the calibration rows, so (1/n) Σ_i γ_{a,y}(x_i) h_ŷ(x_i) estimates P(Ŷ = ŷ | Y = y,
   A = a) for a randomised classifier h. Normalising by that mean (not by label counts) makes
   any constant classifier exactly fair in the LP, so the LP is always feasible.
3. *The empirical LP* over π_i ∈ Δ_K (the randomised decision on row i) and free targets q_k,
   one per constrained rate k = (ŷ_k, y_k):

       min_{π, q}  (1/n) Σ_i Σ_ŷ π_{iŷ} r_ŷ(x_i)          r_ŷ(x) = 1 − Σ_a p(a, ŷ | x) (0-1 risk)
       s.t.        Σ_ŷ π_{iŷ} = 1                                                  for all i
                   |(1/n) Σ_i γ_{a,y_k}(x_i) π_{i,ŷ_k} − q_k| ≤ α / 2             for all k, a

   Equalized odds constrains every (ŷ, y) pair (``rates="all"``, the paper's criterion);
   ``rates="diagonal"`` keeps only ŷ = y, the paper's multi-class equal opportunity and
   exactly what the project's ``eo_bias`` measures. For binary targets both are the same
   criterion (the off-diagonal rate is one minus the diagonal one, in the LP too). So α is a
   bound on the *spread across groups* of each constrained rate (every group within α/2 of a
   common q_k), as a fraction, measured with predicted — not observed — group memberships.
4. *Linear post-processing* from the LP's dual: with ψ_{k,a} the multipliers of the two-sided
   rate constraints (HiGHS's marginals; Σ_a ψ_{k,a} = 0 because q_k is free), the decision is

       ŷ(x) = argmax_ŷ [ −r_ŷ(x) − ε_ŷ + Σ_{k: ŷ_k = ŷ} Σ_a ψ_{k,a} γ_{a,y_k}(x) ],

   a score linear in the predicted joint p(·, · | x), needing no attribute. ε is the paper's
   small uniform perturbation of the risk (width ``noise`` × the mean of max_ŷ r on the
   calibration rows), added both in the LP and at prediction: it makes the argmax unique almost
   surely, and fresh draws at prediction reproduce the fractional decisions the LP makes on
   rows that tie (e.g. identical inputs). That *is* the randomised tie-breaking, not a
   deterministic approximation. With the per-row fold draw of step 1 it makes ``predict`` a
   randomised classifier whose draws are seeded: deterministic given ``seed`` and the batch.

The LP is solved with SciPy's HiGHS (dual simplex first for binary targets, interior point
first for multi-class ones, where the simplex stalls on the degenerate rate rows); the half-width
α/2 is floored at 1e-6 for the same numerical reason. ``lp_agreement_`` checks that the linear
rule reproduces the LP's own one-hot decisions on the calibration rows.

Simplifications: 0-1 loss with equal class weights; no separate calibration step after the
group predictor (the paper optionally recalibrates it; cross-fitting plays that role here);
(a, y) cells absent from the calibration rows are left unconstrained.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import sparse
from scipy.optimize import OptimizeResult, linprog
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

Rates = Literal["all", "diagonal"]
LOG_FLOOR = -30.0  # log-probabilities below this (or −inf) carry no more information
# Half-width floor for the rate constraints. At α = 0 the multi-class "all" LP is feasible only
# exactly (its rate rows are linearly dependent through Σ_ŷ π = 1), and HiGHS's presolve can
# call it infeasible; a spread of 2e-6 is far below any calibration set's sampling noise.
MIN_HALF_WIDTH = 1e-6


def blind_features(x: np.ndarray, log_probs: np.ndarray) -> np.ndarray:
    """The group predictor's inputs: the flattened inputs plus the black box's log-probabilities.

    The black box's answer is the part of x most informative about the shortcut it learned, so
    giving it to the group predictor explicitly saves it from having to re-learn it. Log-probs
    are floored so a hard 0 from the black box does not become −inf.
    """
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    logp = np.clip(np.asarray(log_probs, dtype=np.float64), LOG_FLOOR, 0.0)
    if logp.ndim != 2 or len(logp) != len(flat):
        raise ValueError("log_probs must be (rows, classes) with one row per input")
    return np.hstack([flat, np.nan_to_num(logp, nan=LOG_FLOOR)])


@dataclass(frozen=True)
class _Problem:
    """The LP's data: risks (n, K), γ (n, G, K), constrained pairs (ŷ, y), usable (a, y) cells."""

    risk: np.ndarray
    gamma: np.ndarray
    pairs: tuple[tuple[int, int], ...]
    cells: np.ndarray  # (G, K) bool: the (a, y) cells seen in the calibration rows


class LinearPostBlind:
    """Attribute-blind LinearPost for equalized odds (see the module docstring for the maths).

    ``tolerance`` is α: each constrained rate P(Ŷ = ŷ | Y = y, A = a) may spread by at most α
    across groups on the calibration rows (as the group predictor sees them); α ≥ 1 is no
    constraint. ``seed`` fixes the folds and the perturbation, so refits are reproducible.
    """

    def __init__(
        self,
        tolerance: float = 0.0,
        seed: int = 0,
        rates: Rates = "all",
        n_folds: int = 5,
        regularisation: float = 1.0,
        noise: float = 1e-4,
    ) -> None:
        if tolerance < 0:
            raise ValueError("tolerance must be non-negative")
        if rates not in ("all", "diagonal"):
            raise ValueError("rates must be 'all' or 'diagonal'")
        if n_folds < 2:
            raise ValueError("n_folds must be at least 2 (cross-fitting)")
        self.tolerance = tolerance
        self.seed = seed
        self.rates: Rates = rates
        self.n_folds = n_folds
        self.regularisation = regularisation  # LogisticRegression's C
        self.noise = noise

    def fit(
        self,
        features: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        n_classes: int | None = None,
    ) -> LinearPostBlind:
        """Fit the group predictor on the calibration rows, then solve the LP for ψ.

        ``y`` holds class indices 0 … K−1 (K = ``n_classes``, else max(y) + 1: pass it when a
        small calibration set may miss a class); ``groups`` the bias attribute (any values,
        compared as strings, any number of groups), used here and never again.
        """
        features = np.asarray(features, dtype=np.float64)
        y = np.asarray(y).astype(np.int64)
        self.n_classes_ = max(n_classes or int(y.max()) + 1, 2)
        _check_rows(features, y, groups, self.n_classes_)
        self.groups_, group_idx = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        if len(self.groups_) < 2:
            raise ValueError("LinearPost needs at least two groups in the calibration rows")
        joint = group_idx * self.n_classes_ + y
        oof, self.models_ = _cross_fit(features, joint, self._n_joint, self._fit_kwargs())
        self.joint_mean_ = oof.mean(axis=0).reshape(len(self.groups_), self.n_classes_)
        cells = np.bincount(joint, minlength=self._n_joint).reshape(self.joint_mean_.shape) > 0
        self.cells_ = cells & (self.joint_mean_ > 0)
        problem = self._problem(oof)
        eps = self._perturbation(problem.risk, np.random.default_rng([self.seed, 0]), fit=True)
        started = time.perf_counter()
        self.psi_, self.lp_decisions_, self.lp_objective_ = _solve(problem, eps, self.tolerance)
        self.lp_seconds_ = time.perf_counter() - started
        self.lp_agreement_ = self._agreement(problem, eps)
        return self

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(rows, K) post-processed scores; ``predict`` is their argmax. Attribute-free."""
        problem = self._problem(self.joint_proba(features))
        eps = self._perturbation(problem.risk, np.random.default_rng([self.seed, 1]), fit=False)
        return self._scores(problem, eps)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class indices for new rows, from their features alone."""
        return np.argmax(self.scores(features), axis=1)

    def joint_proba(self, features: np.ndarray) -> np.ndarray:
        """p(a, y | x) as (rows, G·K), a-major, each row scored by one fold model drawn at
        random (seeded). Test rows then see the same distribution of predictions the LP saw out
        of fold, so the LP's decisions — fractional ones on repeated inputs included — are
        what gets served; the fold models' mean would be a different predictor."""
        features = np.asarray(features, dtype=np.float64)
        every = np.stack([_proba(m, features, self._n_joint) for m in self.models_])
        rng = np.random.default_rng([self.seed, 2])
        pick = rng.integers(0, len(self.models_), size=len(features))
        return every[pick, np.arange(len(features))]

    @property
    def _n_joint(self) -> int:
        return len(self.groups_) * self.n_classes_

    def _fit_kwargs(self) -> dict[str, float | int]:
        return {"C": self.regularisation, "seed": self.seed, "n_folds": self.n_folds}

    def _problem(self, joint_proba: np.ndarray) -> _Problem:
        """Risk and γ for these rows; γ of an unseen (a, y) cell is 0 (left unconstrained)."""
        k = self.n_classes_
        p_ay = joint_proba.reshape(len(joint_proba), len(self.groups_), k)
        safe_mean = np.where(self.cells_, self.joint_mean_, 1.0)
        gamma = np.where(self.cells_, p_ay / safe_mean, 0.0)
        risk = 1.0 - p_ay.sum(axis=1)
        if self.rates == "all":
            pairs = tuple((yh, yy) for yy in range(k) for yh in range(k))
        else:
            pairs = tuple((yy, yy) for yy in range(k))
        return _Problem(risk, gamma, pairs, self.cells_)

    def _agreement(self, problem: _Problem, eps: np.ndarray) -> float:
        """Share of calibration rows the LP decides outright (π one-hot) on which the linear
        rule picks the same class: ~1 unless ψ was read off the solver wrongly."""
        pi = self.lp_decisions_
        integral = pi.max(axis=1) > 1 - 1e-6
        decided = np.argmax(self._scores(problem, eps), axis=1)
        return float(np.mean(decided[integral] == pi[integral].argmax(axis=1)))

    def _perturbation(self, risk: np.ndarray, rng: np.random.Generator, fit: bool) -> np.ndarray:
        """Uniform noise on the risk; its width is fixed from the calibration rows' risks."""
        if fit:
            self.noise_width_ = self.noise * float(np.mean(risk.max(axis=1)))
        return rng.uniform(-self.noise_width_, self.noise_width_, size=risk.shape)

    def _scores(self, problem: _Problem, eps: np.ndarray) -> np.ndarray:
        """−(risk + ε) plus the fairness term Σ_k Σ_a ψ_{k,a} γ_{a,y_k} on column ŷ_k."""
        out = -(problem.risk + eps)
        for k, (yhat, yy) in enumerate(problem.pairs):
            out[:, yhat] += problem.gamma[:, :, yy] @ self.psi_[k]
        return out


def linear_post(
    calib_features: np.ndarray,
    calib_y: np.ndarray,
    calib_b: np.ndarray,
    test_features: np.ndarray,
    tolerance: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """One-call form, like ``peers.threshold_optimizer`` but with no test attribute."""
    model = LinearPostBlind(tolerance=tolerance, seed=seed)
    return model.fit(calib_features, calib_y, calib_b).predict(test_features)


def _check_rows(features: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int) -> None:
    if features.ndim != 2 or not len(features) == len(y) == len(groups):
        raise ValueError("features must be (rows, columns), with one y and one group per row")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y must hold class indices 0 … {k - 1}")


def _joint_model(c: float) -> Pipeline:
    """Multinomial logistic regression: a proper scoring rule, so probabilities come out
    reasonably calibrated; standardising keeps one C meaningful across datasets."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


def _proba(model: Pipeline, features: np.ndarray, n_joint: int) -> np.ndarray:
    """Probabilities over all G·K cells, 0 for cells the model never saw."""
    out = np.zeros((len(features), n_joint))
    out[:, model.classes_] = model.predict_proba(features)
    return out


def _cross_fit(
    features: np.ndarray, joint: np.ndarray, n_joint: int, kw: dict[str, float | int]
) -> tuple[np.ndarray, list[Pipeline]]:
    """Out-of-fold p(a, y | x) for every calibration row, and the fold models."""
    folds = StratifiedKFold(n_splits=int(kw["n_folds"]), shuffle=True, random_state=int(kw["seed"]))
    oof = np.zeros((len(features), n_joint))
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # rare (a, y) cells: fewer rows than folds
        for train, held in folds.split(features, joint):
            model = _joint_model(float(kw["C"])).fit(features[train], joint[train])
            oof[held] = _proba(model, features[held], n_joint)
            models.append(model)
    return oof, models


def _solve(
    problem: _Problem, eps: np.ndarray, tolerance: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Solve the empirical LP with HiGHS; return ψ (pairs, G), the primal π (n, K), the value.

    ψ = λ⁻ − λ⁺ from the multipliers of the lower/upper rate constraints. HiGHS reports
    marginals ∂value/∂b_ub ≤ 0, i.e. −λ, so ψ = m_upper − m_lower.
    """
    risk = problem.risk + eps
    n, k = risk.shape
    g = problem.gamma.shape[1]
    psi = np.zeros((len(problem.pairs), g))
    if tolerance >= 1.0:  # a rate spread never exceeds 1: nothing to constrain
        pi = np.eye(k)[np.argmin(risk, axis=1)]
        return psi, pi, float(np.mean(np.min(risk, axis=1)))
    rows = [
        (p, a) for p, (_, yy) in enumerate(problem.pairs) for a in range(g) if problem.cells[a, yy]
    ]
    a_ub = _rate_rows(problem, rows, n, k)
    n_q = len(problem.pairs)
    a_eq = sparse.hstack([sparse.kron(sparse.eye(n), np.ones((1, k))), sparse.csr_matrix((n, n_q))])
    lp = {
        "c": np.concatenate([risk.ravel() / n, np.zeros(n_q)]),
        "A_ub": sparse.vstack([a_ub, -a_ub]).tocsr(),
        "b_ub": np.full(2 * len(rows), max(tolerance / 2, MIN_HALF_WIDTH)),
        "A_eq": a_eq.tocsr(),
        "b_eq": np.ones(n),
        "bounds": [(0.0, None)] * (n * k) + [(None, None)] * n_q,
    }
    res = _highs(lp, multiclass=k > 2)
    marg = res.ineqlin.marginals
    for j, (p, a) in enumerate(rows):
        psi[p, a] = marg[j] - marg[len(rows) + j]
    return psi, res.x[: n * k].reshape(n, k), float(res.fun)


def _highs(lp: dict[str, Any], multiclass: bool) -> OptimizeResult:
    """HiGHS, simplex first for binary targets (fast, exact basis) and interior point first for
    multi-class ones, whose rate rows are degenerate (dependent through Σ_ŷ π = 1) and stall
    or trip the simplex; the other method is the fallback. Both return dual marginals."""
    methods = ("highs-ipm", "highs-ds") if multiclass else ("highs-ds", "highs-ipm")
    messages = []
    for method in methods:
        res = linprog(**lp, method=method)
        if res.status == 0:
            return res
        messages.append(f"{method}: {res.message}")
    raise RuntimeError("LinearPost LP failed: " + "; ".join(messages))


def _rate_rows(problem: _Problem, rows: list[tuple[int, int]], n: int, k: int) -> sparse.csr_matrix:
    """One row per (pair, group): (1/n) Σ_i γ_{a,y}(x_i) π_{i,ŷ} − q_pair."""
    cols, vals, row_ids = [], [], []
    idx = np.arange(n)
    for r, (p, a) in enumerate(rows):
        yhat, yy = problem.pairs[p]
        cols += [idx * k + yhat, np.array([n * k + p])]
        vals += [problem.gamma[:, a, yy] / n, np.array([-1.0])]
        row_ids += [np.full(n + 1, r)]
    shape = (len(rows), n * k + len(problem.pairs))
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(row_ids), np.concatenate(cols))), shape=shape
    )
