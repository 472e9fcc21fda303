"""α selection: the rule on hand-made curves, and the curve's ends."""

from __future__ import annotations

import numpy as np

from patch_training.alpha import AlphaPoint, alpha_curve, choose_alpha
from patch_training.metrics import GroupReport
from service.jobs.spec import GateConfig


def point(
    alpha: float, avg: float, worst: float, eo: float, acc: float | None = None
) -> AlphaPoint:
    return AlphaPoint(alpha, GroupReport(avg, worst, eo, avg if acc is None else acc, {}, 1), {})


def gate(avg_drop: float = 2.0, acc_drop: float = 5.0) -> GateConfig:
    return GateConfig(max_avg_acc_drop_pp=avg_drop, max_acc_drop_pp=acc_drop)


def test_best_worst_group_among_alphas_no_more_biased_than_alpha_one() -> None:
    curve = [
        point(0.0, 0.70, 0.40, 0.30),
        point(0.5, 0.70, 0.60, 0.25),  # best worst-group, but more biased than α=1
        point(1.0, 0.69, 0.45, 0.20),
        point(1.5, 0.69, 0.50, 0.15),
    ]
    assert choose_alpha(curve, gate(2.0)).alpha == 1.5


def test_alphas_that_cost_too_much_average_accuracy_are_excluded() -> None:
    curve = [
        point(0.0, 0.70, 0.40, 0.30),
        point(1.0, 0.69, 0.45, 0.20),
        point(2.0, 0.60, 0.55, 0.05),  # 10 points below raw
    ]
    assert choose_alpha(curve, gate(2.0)).alpha == 1.0
    assert choose_alpha(curve, gate(20.0, acc_drop=20.0)).alpha == 2.0


def test_alphas_that_cost_too_much_overall_accuracy_are_excluded() -> None:
    curve = [
        point(0.0, 0.70, 0.40, 0.30, acc=0.80),
        point(1.0, 0.70, 0.45, 0.20, acc=0.79),
        point(2.0, 0.70, 0.55, 0.05, acc=0.70),  # avg-group holds, accuracy falls 10 points
    ]
    assert choose_alpha(curve, gate(acc_drop=5.0)).alpha == 1.0
    assert choose_alpha(curve, gate(acc_drop=15.0)).alpha == 2.0


def test_alpha_one_when_nothing_qualifies() -> None:
    curve = [point(0.0, 0.70, 0.40, 0.30), point(1.0, 0.50, 0.45, 0.20)]
    assert choose_alpha(curve, gate(2.0)).alpha == 1.0


def test_ties_go_to_the_alpha_closest_to_one() -> None:
    curve = [point(0.0, 0.7, 0.4, 0.3), point(0.75, 0.7, 0.5, 0.2), point(1.0, 0.7, 0.5, 0.2)]
    curve.append(point(1.5, 0.7, 0.5, 0.2))
    assert choose_alpha(curve, gate(2.0)).alpha == 1.0


def test_curve_starts_at_the_raw_predictions_and_always_has_alpha_one() -> None:
    rng = np.random.default_rng(0)
    log_m = np.log(rng.dirichlet([1, 1], size=50))
    log_g = np.log(rng.dirichlet([1, 1], size=50))
    y, b = rng.integers(0, 2, 50), rng.choice(["a", "b"], 50)
    curve = alpha_curve(log_m, log_g, y, b, grid=[0.5], gate=GateConfig(bootstrap_draws=200))
    assert [p.alpha for p in curve] == [0.0, 0.5, 1.0]
    raw = curve[0].report
    assert raw.accuracy == np.mean(log_m.argmax(1) == y)
    for p in curve:  # each point's band brackets its estimate
        for metric, value in p.report.as_percent().items():
            low, high = p.band[metric]
            assert low - 1e-9 <= value <= high + 1e-9, (p.alpha, metric)
