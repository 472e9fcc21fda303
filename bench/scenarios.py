"""The two phases of the benchmark: which processes run together, and what is compared.

Each phase starts its own processes so that its upstream (instant, or a calibrated 20 ms)
is the only thing that differs; within a phase compared targets share one stand-in.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import numpy as np

from bench.common import V2_INFER, predict_body, v2_body
from bench.measure import Bench, Measured, Scenario
from bench.patches import HeavyPatch
from bench.servers import activate_patch, gateway, passthrough, standin, wait_debiased
from bench.upstream import calibrate_delay, calibration_json


def fast_phase(bench: Bench, row: np.ndarray, patch: bytes) -> Measured:
    """Scenarios 1-3: one zero-delay upstream, called directly, through the gateway (v2 and
    ``/predict``) and through the bare passthrough, at c=1 then c=32; at c=32 also a second
    gateway with dynamic batching off (same registry, so the same patch), which forwards one
    upstream call per request as the passthrough does."""
    v2, pred = v2_body(row), predict_body(row)
    with ExitStack() as stack:
        up = stack.enter_context(standin(0.0))
        gw = stack.enter_context(gateway(up.url, "fast"))
        pt = stack.enter_context(passthrough(up.url))
        unbatched = stack.enter_context(
            gateway(up.url, "unbatched", ERASER_RUNTIME__BATCH_MAX_ROWS="0")
        )
        activate_patch(gw.url, "bench-mlp32", patch, v2)
        wait_debiased(unbatched.url, "bench-mlp32", v2)
        targets = (("direct", up), ("gateway", gw), ("passthrough", pt))
        c1 = [Scenario(f"{name}_c1", s.url + V2_INFER, v2, 1, s.pid) for name, s in targets]
        c1.append(Scenario("predict_c1", gw.url + "/predict", pred, 1, gw.pid))
        c32 = [Scenario(f"{name}_c32", s.url + V2_INFER, v2, 32, s.pid) for name, s in targets]
        c32.append(Scenario("unbatched_c32", unbatched.url + V2_INFER, v2, 32, unbatched.pid))
        loads, rounds = bench.measure(c1)
        more_loads, more_rounds = bench.measure(c32)
    return loads | more_loads, rounds | more_rounds


def slow_phase(
    bench: Bench, rows: np.ndarray, heavy: HeavyPatch
) -> tuple[Measured, dict[str, Any]]:
    """Scenario 4: an upstream calibrated to 20 ms and a ≈10 ms patch, which the gateway runs
    concurrently. The bare passthrough on the same upstream shows what one proxy hop alone
    costs there. Returns the loads and how the upstream was calibrated."""
    body = v2_body(rows)
    calibration = calibration_json(calibrate_delay(bench, body))
    with ExitStack() as stack:
        up = stack.enter_context(standin(calibration["delay_ms"]))
        gw = stack.enter_context(gateway(up.url, "slow"))
        pt = stack.enter_context(passthrough(up.url))
        activate_patch(gw.url, "bench-heavy", heavy.blob, body)
        targets = (("direct", up), ("gateway", gw), ("passthrough", pt))
        measured = bench.measure(
            [Scenario(f"slow_{name}_c1", s.url + V2_INFER, body, 1, s.pid) for name, s in targets]
        )
    return measured, calibration
