"""The validation gate decides on intervals: a verdict needs the whole interval to clear each
threshold, and it quotes the numbers and intervals it was made on."""

from __future__ import annotations

from patch_training.gate import judge
from service.jobs.spec import Evidence, GateConfig, Interval

METRICS = ("avg_group_acc", "worst_group_acc", "eo_bias", "accuracy")


def evidence(eo_change: tuple[float, float, float], acc_change=(0, -1, 1), avg_change=(0, -1, 1),
             rows_per_group: int = 50) -> Evidence:  # fmt: skip
    """Raw EO 20, accuracy and avg-group 70; changes as (estimate, low, high) in points."""
    values = dict(zip(METRICS, (70, 50, 20, 70), strict=True))
    raw = {m: Interval(estimate=v, low=v, high=v) for m, v in values.items()}
    changes = {"eo_bias": eo_change, "accuracy": acc_change, "avg_group_acc": avg_change,
               "worst_group_acc": (0, 0, 0)}  # fmt: skip
    change = {m: Interval(estimate=e, low=lo, high=hi) for m, (e, lo, hi) in changes.items()}
    fair = {m: Interval(estimate=raw[m].estimate + change[m].estimate, low=0, high=100)
            for m in METRICS}  # fmt: skip
    groups = {s: {"y=0,b=a": Interval(estimate=70, low=60, high=80)} for s in ("raw", "fair")}
    return Evidence(rows=4 * rows_per_group, confidence=0.95, draws=1000, raw=raw, fair=fair,
                    change=change, groups=groups,
                    group_rows={f"g{i}": rows_per_group for i in range(4)})  # fmt: skip


def test_validated_when_every_interval_clears_its_threshold() -> None:
    verdict = judge(evidence((-10, -15, -5)), GateConfig())
    assert verdict.passed and verdict.rows_per_group_needed is None
    assert "reduction 10.00 [5.00, 15.00] ≥ 1" in verdict.reason
    assert "200 verdict rows" in verdict.reason


def test_a_reduction_whose_interval_reaches_below_the_margin_is_not_enough_evidence() -> None:
    verdict = judge(evidence((-4, -9, 1)), GateConfig(min_bias_reduction_pp=1.0))
    assert not verdict.passed and verdict.reason.startswith("not enough evidence")
    # half-width 5 against a slack of 3: (5/3)² × 50 rows per group
    assert verdict.rows_per_group_needed == 139


def test_an_estimate_that_misses_the_margin_is_rejected_for_that_reason() -> None:
    verdict = judge(evidence((-0.5, -3, 2)), GateConfig())
    assert not verdict.passed and verdict.reason.startswith("bias not reduced by 1 points")
    assert verdict.rows_per_group_needed is None  # no number of rows would validate it


def test_an_accuracy_drop_beyond_its_tolerance_is_rejected() -> None:
    verdict = judge(evidence((-10, -15, -5), acc_change=(-6, -8, -4)), GateConfig())
    assert not verdict.passed and verdict.reason.startswith("accuracy fell by more than 5")


def test_an_accuracy_drop_whose_interval_exceeds_the_tolerance_is_not_enough_evidence() -> None:
    verdict = judge(evidence((-10, -15, -5), acc_change=(-3, -6, -0.5)), GateConfig())
    assert not verdict.passed and verdict.reason.startswith("not enough evidence")
    assert "accuracy 70.00 → 67.00, drop 3.00 [0.50, 6.00] ≤ 5" in verdict.reason


def test_average_group_accuracy_has_its_own_tolerance() -> None:
    gate = GateConfig(max_avg_acc_drop_pp=2.0)
    verdict = judge(evidence((-10, -15, -5), avg_change=(-3, -4, -2)), gate)
    assert not verdict.passed and "avg-group accuracy fell by more than 2" in verdict.reason


def test_verdict_rows_without_a_class_in_two_groups_are_not_enough_evidence() -> None:
    ev = evidence((-10, -15, -5)).model_copy(update={"comparable_classes": 0})
    verdict = judge(ev, GateConfig())
    assert not verdict.passed and verdict.reason.startswith("not enough evidence")
    assert "two bias groups" in verdict.reason and verdict.rows_per_group_needed is None
