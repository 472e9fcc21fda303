"""Eq. 17 targets against a hand-worked example, and the empty-group fallback."""

from __future__ import annotations

import numpy as np

from patch_training.methods.distillation import distillation_targets


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_targets_match_the_hand_worked_example() -> None:
    # Two classes, bias values "a"/"b". log M per sample:
    log_m = np.log(np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]]))
    y = np.array([0, 0, 1, 0, 1])
    b = np.array(["a", "a", "a", "b", "b"])
    t = distillation_targets(log_m, y, b)
    # Sample 0 (y=0, b=a): contrast class 1 in bias a = {sample 2} → softmax((ℓ0 + ℓ2)/2).
    np.testing.assert_allclose(t[0], softmax((log_m[0] + log_m[2]) / 2), atol=1e-12)
    # Sample 2 (y=1, b=a): contrast class 0 in bias a = mean of samples 0 and 1.
    np.testing.assert_allclose(
        t[2], softmax((log_m[2] + (log_m[0] + log_m[1]) / 2) / 2), atol=1e-12
    )
    # Sample 3 (y=0, b=b): contrast class 1 in bias b = {sample 4}.
    np.testing.assert_allclose(t[3], softmax((log_m[3] + log_m[4]) / 2), atol=1e-12)
    np.testing.assert_allclose(t.sum(axis=1), 1.0)


def test_empty_group_falls_back_to_the_class_mean_over_all_bias_values() -> None:
    log_m = np.log(np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]]))
    y = np.array([0, 1, 1, 0])
    b = np.array(["a", "a", "a", "b"])  # S_{1,b} is empty
    t = distillation_targets(log_m, y, b)
    class1_mean = (log_m[1] + log_m[2]) / 2  # S_1 over all bias values
    np.testing.assert_allclose(t[3], softmax((log_m[3] + class1_mean) / 2), atol=1e-12)


def test_a_class_missing_entirely_is_dropped_from_the_average() -> None:
    log_m = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]))
    y = np.array([0, 1])  # no sample of class 2
    b = np.array([0, 0])
    t = distillation_targets(log_m, y, b)
    np.testing.assert_allclose(t[0], softmax((log_m[0] + log_m[1]) / 2), atol=1e-12)


def test_reference_means_are_used_for_held_out_rows() -> None:
    ref_m = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))
    ref_y = np.array([0, 1, 0, 1])
    ref_b = np.array(["a", "a", "b", "b"])
    held = np.log(np.array([[0.5, 0.5], [0.1, 0.9]]))
    t = distillation_targets(held, np.array([0, 1]), np.array(["b", "a"]), (ref_m, ref_y, ref_b))
    # Held-out row 0 (y=0, b=b) contrasts with the reference's class-1/bias-b mean: row 3.
    np.testing.assert_allclose(t[0], softmax((held[0] + ref_m[3]) / 2), atol=1e-12)
    np.testing.assert_allclose(t[1], softmax((held[1] + ref_m[0]) / 2), atol=1e-12)


def test_a_bias_value_the_reference_never_saw_uses_class_means() -> None:
    ref_m = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]]))
    ref_y = np.array([0, 1, 0, 1])
    ref_b = np.array(["a", "a", "b", "b"])
    held = np.log(np.array([[0.7, 0.3]]))
    t = distillation_targets(held, np.array([0]), np.array(["c"]), (ref_m, ref_y, ref_b))
    class1_mean = (ref_m[1] + ref_m[3]) / 2
    np.testing.assert_allclose(t[0], softmax((held[0] + class1_mean) / 2), atol=1e-12)
    assert np.isfinite(t).all()
