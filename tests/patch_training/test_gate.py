"""The validation gate's verdicts quote the numbers they were made on."""

from __future__ import annotations

from patch_training.gate import GateConfig, judge
from patch_training.metrics import GroupReport


def report(avg: float, eo: float) -> GroupReport:
    return GroupReport(avg, avg - 0.1, eo, avg, {})


def test_passes_when_bias_falls_enough_and_accuracy_holds() -> None:
    verdict = judge(report(0.70, 0.20), report(0.69, 0.10), GateConfig())
    assert verdict.passed and "20.00 -> 10.00" in verdict.reason


def test_fails_when_bias_does_not_fall_by_the_margin() -> None:
    verdict = judge(report(0.70, 0.20), report(0.70, 0.195), GateConfig())
    assert not verdict.passed and "bias not reduced" in verdict.reason


def test_fails_when_average_accuracy_drops_beyond_tolerance() -> None:
    verdict = judge(report(0.70, 0.20), report(0.65, 0.05), GateConfig(max_avg_acc_drop_pp=2))
    assert not verdict.passed and "accuracy fell" in verdict.reason
