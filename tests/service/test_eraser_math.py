"""The Eraser combination: identities and numerical safety the gateway relies on."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service import eraser_math as em
from service.settings import OutputKind

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
extreme = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


def batch(k: int = 3, elements: st.SearchStrategy[float] = finite) -> st.SearchStrategy:
    return arrays(np.float64, st.tuples(st.integers(1, 6), st.just(k)), elements=elements)


@given(batch())
def test_alpha_zero_is_the_identity(logits: np.ndarray) -> None:
    log_p = em.log_softmax(logits)
    log_g = em.log_softmax(logits[::-1] * 2.0)
    np.testing.assert_allclose(em.fair_log_probs(log_p, [log_g], [0.0]), log_p, atol=1e-12)


@given(batch(), batch(), batch(), st.floats(0, 3), st.floats(0, 3))
def test_stacking_order_does_not_matter(
    logits: np.ndarray, g1: np.ndarray, g2: np.ndarray, a1: float, a2: float
) -> None:
    n = min(len(logits), len(g1), len(g2))
    log_p, lg1, lg2 = (em.log_softmax(a[:n]) for a in (logits, g1, g2))
    forward = em.fair_log_probs(log_p, [lg1, lg2], [a1, a2])
    backward = em.fair_log_probs(log_p, [lg2, lg1], [a2, a1])
    np.testing.assert_allclose(forward, backward, atol=1e-9)


@given(batch(elements=extreme), batch(elements=extreme), st.floats(0, 10))
def test_rows_sum_to_one_and_stay_finite_for_extreme_logits(
    logits: np.ndarray, bias: np.ndarray, alpha: float
) -> None:
    n = min(len(logits), len(bias))
    fair = em.fair_log_probs(em.log_softmax(logits[:n]), [em.log_softmax(bias[:n])], [alpha])
    assert np.isfinite(fair).all()
    np.testing.assert_allclose(em.softmax_from_log(fair).sum(axis=1), 1.0, atol=1e-12)


@settings(max_examples=200)
@given(st.floats(-1e4, 1e4, allow_nan=False))
def test_sigmoid_pair_agrees_with_two_class_softmax(eta: float) -> None:
    pair = em.to_log_probs(np.array([[eta]]), OutputKind.SIGMOID_LOGITS)
    two_class = em.to_log_probs(np.array([[0.0, eta]]), OutputKind.LOGITS)
    assert np.isfinite(pair).all()
    np.testing.assert_allclose(pair, two_class, atol=1e-9)


def test_eraser_subtracts_the_bias_log_probabilities() -> None:
    """Hand-worked: p = (0.8, 0.2), G = (0.8, 0.2), α = 1 → uniform."""
    log_p = np.log([[0.8, 0.2]])
    fair = em.fair_log_probs(log_p, [np.log([[0.8, 0.2]])], [1.0])
    np.testing.assert_allclose(em.softmax_from_log(fair), [[0.5, 0.5]], atol=1e-12)
    half = em.softmax_from_log(em.fair_log_probs(log_p, [np.log([[0.8, 0.2]])], [0.5]))
    np.testing.assert_allclose(half, [[2 / 3, 1 / 3]], atol=1e-12)


def test_all_output_kinds_normalise_to_the_same_log_probabilities() -> None:
    logits = np.array([[1.0, -2.0, 0.5], [30.0, 0.0, -30.0]])
    expected = em.log_softmax(logits)
    probs = np.exp(expected)
    np.testing.assert_allclose(
        em.to_log_probs(probs, OutputKind.PROBABILITIES), expected, atol=1e-9
    )
    np.testing.assert_allclose(
        em.to_log_probs(expected, OutputKind.LOG_PROBABILITIES), expected, atol=1e-12
    )


@given(batch())
def test_from_log_probs_inverts_to_log_probs_for_every_kind(logits: np.ndarray) -> None:
    log_p = em.log_softmax(logits)
    for kind in (OutputKind.LOGITS, OutputKind.PROBABILITIES, OutputKind.LOG_PROBABILITIES):
        back = em.to_log_probs(em.from_log_probs(log_p, kind), kind)
        np.testing.assert_allclose(back, log_p, atol=1e-8)
    binary = em.log_softmax(logits[:, :2])
    back = em.to_log_probs(
        em.from_log_probs(binary, OutputKind.SIGMOID_LOGITS), OutputKind.SIGMOID_LOGITS
    )
    np.testing.assert_allclose(back, binary, atol=1e-8)
