"""LinearPost (attribute-blind, equalized odds) on synthetic populations with known answers.

The populations are Gaussian class-conditionals with a shared variance per feature, so the
black box below is the exact Bayes posterior p(y | x) and the group predictor (multinomial
logistic regression on (a, y)) is well specified: what is left to test is the LP and the
post-processing rule, judged on large fresh samples with the project's EO metric.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from bench.quality.linearpost import LinearPostBlind, blind_features, linear_post
from patch_training.metrics import group_report

N_CALIB = 3000
N_FRESH = 20_000


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny problems: BLAS/OpenMP threads only contend with each other (10× slower on a busy
    two-core machine), so keep every fit here on one thread."""
    with threadpool_limits(limits=1):
        yield


def _population(
    n: int, seed: int, shortcut: float, n_groups: int = 2, n_classes: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows (features, y, group names, black-box probabilities).

    y is uniform; the group equals y mod n_groups with probability ``shortcut`` and is uniform
    otherwise, so ``shortcut`` = 0 makes A independent of Y (x still reveals A, but A then says
    nothing about y). x = (core, short): core is a weak signal of y, short a sharp signal of the
    group — the shortcut a black box exploits.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    tied = rng.random(n) < shortcut
    a = np.where(tied, y % n_groups, rng.integers(0, n_groups, n))
    core = y + rng.normal(0.0, 1.2, n)
    short = 3.0 * a + rng.normal(0.0, 0.6, n)
    x = np.column_stack([core, short])
    return x, y, np.array([f"g{v}" for v in a]), _posterior(x, shortcut, n_groups, n_classes)


def _posterior(x: np.ndarray, shortcut: float, n_groups: int, n_classes: int) -> np.ndarray:
    """The exact p(y | x) of ``_population``: the Bayes-optimal, biased black box."""
    like = np.zeros((len(x), n_classes))
    for yy in range(n_classes):
        for aa in range(n_groups):
            p_a = (1 - shortcut) / n_groups + shortcut * (aa == yy % n_groups)
            dens = np.exp(-((x[:, 0] - yy) ** 2) / (2 * 1.2**2) - (x[:, 1] - 3 * aa) ** 2 / 0.72)
            like[:, yy] += p_a * dens
    return like / like.sum(axis=1, keepdims=True)


def _features(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return blind_features(x, np.log(probs))


def _eo(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> float:
    return group_report(y, pred, groups).eo_bias


@pytest.fixture(scope="module")
def shortcut_data() -> dict[str, tuple[np.ndarray, ...]]:
    x, y, b, p = _population(N_CALIB, seed=1, shortcut=0.6)
    xf, yf, bf, pf = _population(N_FRESH, seed=2, shortcut=0.6)
    return {"calib": (_features(x, p), y, b), "fresh": (_features(xf, pf), yf, bf, pf)}


@pytest.fixture(scope="module")
def strict(shortcut_data: dict[str, tuple[np.ndarray, ...]]) -> LinearPostBlind:
    return LinearPostBlind(tolerance=0.0, seed=0).fit(*shortcut_data["calib"])


def test_independent_attribute_leaves_the_argmax_alone() -> None:
    """A carries nothing about Y (A ⊥ Y and Y ⊥ A | X, though x still reveals A): the black
    box is already fair, so α = 0 may only nudge it by the calibration set's sampling noise."""
    x, y, b, p = _population(N_CALIB, seed=3, shortcut=0.0)
    xf, yf, _, pf = _population(N_FRESH, seed=4, shortcut=0.0)
    model = LinearPostBlind(tolerance=0.0, seed=0).fit(_features(x, p), y, b)
    pred = model.predict(_features(xf, pf))
    raw = np.argmax(pf, axis=1)
    assert np.mean(pred == raw) > 0.95
    assert np.mean(pred == yf) > np.mean(raw == yf) - 0.01


def test_strict_tolerance_removes_the_shortcut_gap(
    shortcut_data: dict[str, tuple[np.ndarray, ...]], strict: LinearPostBlind
) -> None:
    xf, yf, bf, pf = shortcut_data["fresh"]
    raw_gap = _eo(yf, np.argmax(pf, axis=1), bf)
    gap = _eo(yf, strict.predict(xf), bf)
    assert raw_gap > 0.3  # the population really is biased
    assert gap < 0.05
    assert np.mean(strict.predict(xf) == yf) > 0.6  # fair, and still better than a coin


def test_relaxed_tolerance_lands_between(
    shortcut_data: dict[str, tuple[np.ndarray, ...]], strict: LinearPostBlind
) -> None:
    xf, yf, bf, pf = shortcut_data["fresh"]
    raw_gap = _eo(yf, np.argmax(pf, axis=1), bf)
    alpha = 0.2
    relaxed = LinearPostBlind(tolerance=alpha, seed=0).fit(*shortcut_data["calib"])
    gap = _eo(yf, relaxed.predict(xf), bf)
    strict_gap = _eo(yf, strict.predict(xf), bf)
    assert strict_gap + 0.05 < gap < raw_gap - 0.05
    assert gap < alpha + 0.05
    assert np.mean(relaxed.predict(xf) == yf) > np.mean(strict.predict(xf) == yf)


def test_decision_rule_reproduces_the_lp_solution(strict: LinearPostBlind) -> None:
    """The dual's linear rule must pick the LP's own decisions on the calibration rows: a sign
    or indexing slip in ψ breaks this before it shows up as a fairness number."""
    assert strict.lp_agreement_ > 0.99
    assert np.allclose(strict.psi_.sum(axis=1), 0.0, atol=1e-7)  # q is free: Σ_a ψ = 0


def _repeated_inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Four distinct inputs (core, group) repeated n times over: the fair decision on an input
    must be randomised, which only the LP's fractional solution and its serving reproduce."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.where(rng.random(n) < 0.6, y, rng.integers(0, 2, n))
    core = np.where(rng.random(n) < 0.75, y, 1 - y)
    like = np.stack(
        [np.where(a == yy, 0.8, 0.2) * np.where(core == yy, 0.75, 0.25) for yy in (0, 1)], axis=1
    )
    probs = like / like.sum(axis=1, keepdims=True)
    x = np.column_stack([core, a]).astype(float)
    return blind_features(x, np.log(probs)), y, a.astype(str), 2 * core + a


def test_repeated_inputs_get_the_lp_fraction() -> None:
    features, y, b, cell = _repeated_inputs(N_CALIB, seed=13)
    fresh, yf, bf, cell_f = _repeated_inputs(N_FRESH, seed=2)
    model = LinearPostBlind(tolerance=0.0, seed=3).fit(features, y, b)
    pred = model.predict(fresh)
    lp_share = [model.lp_decisions_[cell == c, 1].mean() for c in range(4)]
    served_share = [pred[cell_f == c].mean() for c in range(4)]
    assert any(0.02 < s < 0.98 for s in lp_share)  # the LP did randomise somewhere
    assert np.allclose(served_share, lp_share, atol=0.02)
    assert _eo(yf, pred, bf) < 0.05
    assert _eo(yf, cell_f % 2, bf) > 0.9  # the black box's argmax is the group itself


def test_unconstrained_tolerance_is_the_plain_argmax(
    shortcut_data: dict[str, tuple[np.ndarray, ...]],
) -> None:
    xf, _, _, _ = shortcut_data["fresh"]
    free = LinearPostBlind(tolerance=1.0, seed=0).fit(*shortcut_data["calib"])
    assert not free.psi_.any()
    marginal = free.joint_proba(xf).reshape(len(xf), 2, 2).sum(axis=1)
    clear = np.abs(marginal[:, 1] - marginal[:, 0]) > 2 * free.noise_width_  # no perturbed ties
    assert clear.mean() > 0.99
    assert np.array_equal(free.predict(xf)[clear], np.argmax(marginal, axis=1)[clear])


def test_three_groups_and_three_classes() -> None:
    x, y, b, p = _population(1500, seed=5, shortcut=0.8, n_groups=3, n_classes=3)
    xf, yf, bf, pf = _population(20_000, seed=6, shortcut=0.8, n_groups=3, n_classes=3)
    model = LinearPostBlind(tolerance=0.0, seed=0).fit(_features(x, p), y, b)
    assert list(model.groups_) == ["g0", "g1", "g2"]
    assert model.psi_.shape == (9, 3)
    raw_gap = _eo(yf, np.argmax(pf, axis=1), bf)
    gap = _eo(yf, model.predict(_features(xf, pf)), bf)
    assert gap < raw_gap / 3


def test_predict_never_takes_the_attribute() -> None:
    params = list(inspect.signature(LinearPostBlind.predict).parameters)
    assert params == ["self", "features"]
    assert list(inspect.signature(LinearPostBlind.scores).parameters) == ["self", "features"]


def test_deterministic_given_the_seed(shortcut_data: dict[str, tuple[np.ndarray, ...]]) -> None:
    calib = tuple(part[:1000] for part in shortcut_data["calib"])
    xf = shortcut_data["fresh"][0][:5000]
    first = LinearPostBlind(tolerance=0.05, seed=7).fit(*calib)
    again = LinearPostBlind(tolerance=0.05, seed=7).fit(*calib)
    assert np.array_equal(first.psi_, again.psi_)
    assert np.array_equal(first.predict(xf), again.predict(xf))
    assert np.array_equal(first.predict(xf), first.predict(xf))
    assert np.array_equal(linear_post(*calib, xf, 0.05, 7), first.predict(xf))


def test_blind_features_floors_log_probabilities() -> None:
    x = np.zeros((2, 3, 2))
    with np.errstate(divide="ignore"):
        logp = np.log(np.array([[1.0, 0.0], [0.5, 0.5]]))
    out = blind_features(x, logp)
    assert out.shape == (2, 8)
    assert np.isfinite(out).all()
    with pytest.raises(ValueError):
        blind_features(x, logp[:1])


def test_rejects_a_single_group_and_negative_tolerance() -> None:
    with pytest.raises(ValueError):
        LinearPostBlind(tolerance=-0.1)
    x, y, _, p = _population(200, seed=8, shortcut=0.5)
    with pytest.raises(ValueError, match="two groups"):
        LinearPostBlind().fit(_features(x, p), y, np.array(["only"] * 200))


def test_rejects_labels_outside_the_classes() -> None:
    x, y, b, p = _population(200, seed=9, shortcut=0.5)
    with pytest.raises(ValueError, match="class indices"):
        LinearPostBlind().fit(_features(x, p), y + 1, b, n_classes=2)
    with pytest.raises(ValueError, match="one y and one group"):
        LinearPostBlind().fit(_features(x, p), y[:-1], b)
