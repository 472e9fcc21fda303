"""Group metrics as the Eraser paper defines them (Sec. V-A, Eq. 20)."""

from __future__ import annotations

import numpy as np
import pytest

from patch_training.metrics import group_report


def test_group_metrics_match_a_hand_count() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    bias = np.array(["a", "a", "b", "b", "a", "a", "b", "b"])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    # Groups: (0,a)=1.0, (0,b)=0.5, (1,a)=0.5, (1,b)=1.0
    report = group_report(y_true, y_pred, bias)
    assert report.avg_group_acc == pytest.approx(0.75)
    assert report.worst_group_acc == pytest.approx(0.5)
    assert report.eo_bias == pytest.approx(0.5)  # mean(|1.0-0.5|, |0.5-1.0|)
    assert report.accuracy == pytest.approx(0.75)


def test_multi_valued_bias_uses_max_minus_min_per_class() -> None:
    y_true = np.zeros(6, dtype=int)
    bias = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1])  # per bias: 1.0, 0.5, 0.0
    assert group_report(y_true, y_pred, bias).eo_bias == pytest.approx(1.0)


def test_a_class_seen_in_one_bias_group_only_does_not_dilute_the_eo_bias() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1])
    bias = np.array(["a", "a", "b", "b", "a", "a"])  # class 1 has no rows of group b
    y_pred = np.array([0, 0, 0, 1, 1, 1])  # class 0: a 1.0, b 0.5
    report = group_report(y_true, y_pred, bias)
    assert report.eo_bias == pytest.approx(0.5) and report.comparable_classes == 1


def test_no_comparable_class_is_reported_as_such() -> None:
    y_true, bias = np.array([0, 0, 1, 1]), np.array(["a", "a", "b", "b"])
    report = group_report(y_true, y_true, bias)
    assert report.comparable_classes == 0 and report.eo_bias == 0.0
