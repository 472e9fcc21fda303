"""Calibrating the stand-in's sleep so that "an upstream that takes 20 ms" really does.

``--delay-ms 20`` alone gives a direct p50 of ≈21 ms: timer granularity plus request handling
come on top of the sleep. Judged against that, a 22 ms end-to-end target would leave the
gateway 1 ms, not 2. So the sleep is corrected until the upstream, called directly at c=1 with
the scenario's own body and generator, has p50 = 20 ms: delay -= (p50 − 20), restart, re-measure.

The stand-in runs on uvloop, whose ``call_later`` rounds a sleep to whole milliseconds (19.4 sleeps
19 ms, 19.6 sleeps 20). So the corrected sleep is rounded to whole ms too — a fractional one would
only misreport the sleep taken — and a correction that rounds to the same sleep ends the search:
restarting would change nothing. If what comes on top of the sleep were near x.5 ms no sleep would
land within tolerance, hence ``chosen`` falls back to the closest try measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bench.common import V2_INFER
from bench.measure import Bench, Scenario
from bench.servers import standin

TARGET_MS = 20.0
TOLERANCE_MS = 0.25
MAX_TRIES = 3
STEP_MS = 1.0  # the stand-in's timer resolution (uvloop)
PROBE_S = 3.0  # per try, after a 1 s warm-up: ≈150 requests, enough for a stable p50


@dataclass(frozen=True)
class Try:
    """One calibration step: the sleep the stand-in was started with, and its direct p50."""

    delay_ms: float
    p50_ms: float


def next_delay(delay_ms: float, p50_ms: float, target_ms: float = TARGET_MS) -> float:
    """The sleep that should give ``target_ms`` (what comes on top of the sleep is constant),
    in the whole milliseconds the stand-in can actually sleep."""
    return max(0.0, round((delay_ms - (p50_ms - target_ms)) / STEP_MS) * STEP_MS)


def chosen(tries: list[Try], target_ms: float = TARGET_MS) -> Try:
    """The last try if it met the tolerance, else the closest one measured (never an
    unmeasured extrapolation: the stand-in's timer is coarse, so steps can overshoot)."""
    if abs(tries[-1].p50_ms - target_ms) <= TOLERANCE_MS:
        return tries[-1]
    return min(tries, key=lambda t: abs(t.p50_ms - target_ms))


def calibrate_delay(bench: Bench, body: bytes, target_ms: float = TARGET_MS) -> list[Try]:
    """Up to ``MAX_TRIES`` stand-ins, each measured directly at c=1 with ``body``."""
    tries: list[Try] = []
    delay = target_ms
    for _ in range(MAX_TRIES):
        with standin(delay) as up:
            probe = Scenario("upstream_probe", up.url + V2_INFER, body, 1)
            bench.load(probe, 1.0)
            p50 = bench.load(probe, PROBE_S).p50_ms
        tries.append(Try(delay, p50))
        print(f"  stand-in delay {delay:.3f} ms: direct p50 {p50:.3f} ms", flush=True)
        if abs(p50 - target_ms) <= TOLERANCE_MS or next_delay(delay, p50, target_ms) == delay:
            break
        delay = next_delay(delay, p50, target_ms)
    return tries


def calibration_json(tries: list[Try], target_ms: float = TARGET_MS) -> dict[str, object]:
    """What the report needs to say how the upstream was calibrated, and whether it worked."""
    pick = chosen(tries, target_ms)
    return {
        "target_ms": target_ms,
        "tolerance_ms": TOLERANCE_MS,
        "probe_s": PROBE_S,
        "step_ms": STEP_MS,
        "max_tries": MAX_TRIES,
        "tries": [asdict(t) for t in tries],
        "delay_ms": pick.delay_ms,
        "converged": abs(pick.p50_ms - target_ms) <= TOLERANCE_MS,
    }
