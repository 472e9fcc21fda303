"""ThrottledLog: the first of a run of identical messages at once, the repeats as one count."""

from __future__ import annotations

import asyncio
import logging

import pytest

from service.api import throttled_log
from service.api.throttled_log import ThrottledLog

LOGGER = logging.getLogger("tests.throttled_log")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger=LOGGER.name)
    return caplog


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER.name]


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in records(caplog)]


def test_first_occurrence_is_logged_at_once_with_its_level(
    lines: pytest.LogCaptureFixture,
) -> None:
    log = ThrottledLog(LOGGER, interval_s=10, clock=FakeClock())
    log.warning("k", "upstream %s failed", "m")
    assert messages(lines) == ["upstream m failed"]
    assert records(lines)[0].levelno == logging.WARNING


def test_repeats_within_the_interval_are_counted_not_logged(
    lines: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = ThrottledLog(LOGGER, interval_s=10, clock=clock)
    for _ in range(50):
        log.warning("k", "upstream failed")
        clock.now += 0.1  # 50 in 5 s: all inside the first interval
    assert messages(lines) == ["upstream failed"]


def test_next_occurrence_after_the_interval_reports_the_count_then_starts_a_new_run(
    lines: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = ThrottledLog(LOGGER, interval_s=10, clock=clock)
    for _ in range(4):
        log.warning("k", "upstream %s failed", "m")
    clock.now += 10
    log.warning("k", "upstream %s failed", "m")
    log.warning("k", "upstream %s failed", "m")
    assert messages(lines) == [
        "upstream m failed",
        "upstream m failed (3 more like this in 10 s)",
        "upstream m failed",
    ]


def test_summary_states_a_fractional_interval(lines: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = ThrottledLog(LOGGER, interval_s=0.5, clock=clock)
    log.warning("k", "failed")
    log.warning("k", "failed")
    clock.now += 0.5
    log.warning("k", "failed")
    assert messages(lines)[1] == "failed (1 more like this in 0.5 s)"  # not "in 0 s"


def test_a_run_without_repeats_reports_no_count(lines: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    log = ThrottledLog(LOGGER, interval_s=10, clock=clock)
    log.warning("k", "failed")
    clock.now += 11
    log.warning("k", "failed")
    assert messages(lines) == ["failed", "failed"]


def test_distinct_keys_are_throttled_separately(lines: pytest.LogCaptureFixture) -> None:
    log = ThrottledLog(LOGGER, interval_s=10, clock=FakeClock())
    for _ in range(3):
        log.warning(("POST", "/predict", 502), "bad gateway")
        log.warning(("POST", "/predict", 503), "circuit open")
    assert messages(lines) == ["bad gateway", "circuit open"]


def test_first_line_keeps_the_traceback_and_the_error_level(
    lines: pytest.LogCaptureFixture,
) -> None:
    log = ThrottledLog(LOGGER, interval_s=10, clock=FakeClock())
    for _ in range(2):
        try:
            raise RuntimeError("a bug")
        except RuntimeError:
            log.error("k", "unhandled error", exc_info=True)
    (record,) = records(lines)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


async def test_pending_count_is_flushed_by_a_timer_when_no_repeat_follows(
    lines: pytest.LogCaptureFixture,
) -> None:
    log = ThrottledLog(LOGGER, interval_s=0.05)  # the real clock: the timer runs on the loop
    for _ in range(3):
        log.warning("k", "upstream failed")
    assert messages(lines) == ["upstream failed"]
    await asyncio.sleep(0.2)  # no further occurrence: only the timer can report the count
    assert messages(lines) == ["upstream failed", "upstream failed (2 more like this in 0.05 s)"]
    log.warning("k", "upstream failed")  # the run ended with the flush: a new one starts
    assert messages(lines)[-1] == "upstream failed"


async def test_an_occurrence_that_flushes_first_cancels_the_timer_of_the_ended_run(
    lines: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    log = ThrottledLog(LOGGER, interval_s=0.05, clock=clock)
    log.warning("k", "failed")
    log.warning("k", "failed")  # schedules the flush timer
    clock.now += 0.1
    log.warning("k", "failed")  # flushes the count itself and cancels the timer
    await asyncio.sleep(0.15)  # a stale timer would now end the run that the third call began
    log.warning("k", "failed")  # same fake instant: a repeat of that run, counted
    assert messages(lines) == ["failed", "failed (1 more like this in 0.05 s)", "failed"]


def test_tracked_keys_are_bounded_and_the_oldest_is_reported_early(
    lines: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(throttled_log, "MAX_KEYS", 3)
    log = ThrottledLog(LOGGER, interval_s=10, clock=FakeClock())
    log.warning("a", "a failed")
    log.warning("a", "a failed")
    log.warning("b", "b failed")
    log.warning("c", "c failed")
    log.warning("d", "d failed")  # a fourth key: "a", the oldest, is reported and dropped
    assert messages(lines) == [
        "a failed",
        "b failed",
        "c failed",
        "a failed (1 more like this in 10 s)",
        "d failed",
    ]
    log.warning("a", "a failed")  # no longer tracked: logged as a new run
    assert messages(lines)[-1] == "a failed"
