"""Calibration arithmetic: patch depth from one measurement, upstream sleep from its p50."""

from __future__ import annotations

from bench.patches import scaled_depth
from bench.upstream import TOLERANCE_MS, Try, calibration_json, chosen, next_delay


def test_scaled_depth_is_linear_and_at_least_one() -> None:
    assert scaled_depth(100, 1.25, 10.0) == 800
    assert scaled_depth(800, 10.4, 10.0) == 769
    assert scaled_depth(3, 500.0, 10.0) == 1


def test_next_delay_removes_what_comes_on_top_of_the_sleep() -> None:
    assert next_delay(20.0, 21.05) == 19.0  # whole ms: what the stand-in can sleep
    assert next_delay(19.0, 19.6) == 19.0  # same sleep: calibration stops, not restarts
    assert next_delay(19.0, 18.9) == 20.0
    assert next_delay(0.0, 3.0, target_ms=1.0) == 0.0  # a sleep cannot be negative


def test_chosen_takes_the_last_try_in_tolerance_else_the_closest_measured() -> None:
    ok = [Try(20.0, 21.0), Try(19.0, 20.0 + TOLERANCE_MS)]
    assert chosen(ok) == ok[-1]
    off = [Try(20.0, 21.0), Try(19.0, 19.6), Try(19.4, 20.7)]
    assert chosen(off) == Try(19.0, 19.6)


def test_calibration_json_records_every_try_and_whether_it_converged() -> None:
    cal = calibration_json([Try(20.0, 21.0), Try(19.0, 20.1)])
    assert cal["tries"] == [{"delay_ms": 20.0, "p50_ms": 21.0}, {"delay_ms": 19.0, "p50_ms": 20.1}]
    assert (cal["delay_ms"], cal["converged"], cal["target_ms"]) == (19.0, True, 20.0)
    assert calibration_json([Try(20.0, 21.0)])["converged"] is False
