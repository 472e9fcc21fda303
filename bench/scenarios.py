"""The two phases of the benchmark: which processes run together, and what is compared.

Each phase starts its own processes so that its upstream (instant, or a calibrated 20 ms)
is the only thing that differs; within a phase compared targets share one stand-in.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from bench import image
from bench.common import PREFIX, V2_INFER, predict_body, v2_body
from bench.measure import Bench, Measured, Scenario
from bench.patches import HeavyPatch
from bench.servers import (
    activate_patch,
    gateway,
    passthrough,
    standin,
    standin_dir,
    wait_debiased,
)
from bench.upstream import calibrate_delay, calibration_json

WORKERS = 2  # the multi-process gateway compared with the default single process


def fast_phase(bench: Bench, row: np.ndarray, patch: bytes) -> Measured:
    """Scenarios 1-3: one zero-delay upstream, called directly, through the gateway (v2 and
    ``/predict``) and through the bare passthrough, at c=1 then c=32; at c=32 also a second
    gateway with dynamic batching off (same registry, so the same patch), which forwards one
    upstream call per request as the passthrough does, and a third run as ``eraser serve
    --workers 2`` (two processes on the machine's two cores, sharing them with the stand-in
    and the generator)."""
    v2, pred = v2_body(row), predict_body(row)
    with ExitStack() as stack:
        up = stack.enter_context(standin(0.0))
        gw = stack.enter_context(gateway(up.url, "fast"))
        pt = stack.enter_context(passthrough(up.url))
        unbatched = stack.enter_context(
            gateway(up.url, "unbatched", ERASER_RUNTIME__BATCH_MAX_ROWS="0")
        )
        workers2 = stack.enter_context(gateway(up.url, "workers2", workers=WORKERS))
        activate_patch(gw.url, "bench-mlp32", patch, v2)
        wait_debiased(unbatched.url, "bench-mlp32", v2)
        wait_debiased(workers2.url, "bench-mlp32", v2, in_a_row=20)  # both workers, surely
        targets = (("direct", up), ("gateway", gw), ("passthrough", pt))
        c1 = [Scenario(f"{name}_c1", s.url + V2_INFER, v2, 1, s.pid) for name, s in targets]
        c1.append(Scenario("predict_c1", gw.url + "/predict", pred, 1, gw.pid))
        c32 = [Scenario(f"{name}_c32", s.url + V2_INFER, v2, 32, s.pid) for name, s in targets]
        c32.append(Scenario("unbatched_c32", unbatched.url + V2_INFER, v2, 32, unbatched.pid))
        c32.append(Scenario("workers2_c32", workers2.url + V2_INFER, v2, 32, workers2.pid))
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


def image_phase(bench: Bench, models_dir: Path, prefix: str = PREFIX) -> Measured:
    """The image scenario: the stand-in serving a small CNN over HTTP and gRPC, and one
    gateway running a small-CNN patch beside it, with two models on that upstream: ``image``
    calls it with JSON, ``image-bin`` with binary tensor data. Each way a client can send the
    image (JSON, binary, gRPC) is measured directly and through the gateway, at c=1 then
    c=32, interleaved; the gateway's gRPC route uses the binary upstream call."""
    x = image.image()
    image.write_image_model(models_dir)
    as_json = image.json_body(x)
    as_binary, binary_headers = image.binary_body(x)
    patch = image.image_patch()
    classes, shape = list(image.IMAGE_CLASSES), list(image.IMAGE_SHAPE)
    with ExitStack() as stack:
        up = stack.enter_context(standin_dir(models_dir, grpc=True))
        models = [image.model_config(up.url, image.IMAGE_MODEL, binary=False),
                  image.model_config(up.url, image.IMAGE_MODEL_BINARY, binary=True)]  # fmt: skip
        gw = stack.enter_context(gateway(up.url, "image", prefix=prefix, models=models, grpc=True))
        for model in (image.IMAGE_MODEL, image.IMAGE_MODEL_BINARY):
            activate_patch(gw.url, f"bench-cnn-{model}", patch, as_json, model, classes, shape)
        assert up.grpc is not None and gw.grpc is not None

        def scenarios(c: int) -> list[Scenario]:
            def v2(base: str, model: str) -> str:
                return f"{base}/v2/models/{model}/infer"

            ways = {
                "direct_json": (v2(up.url, image.IMAGE_MODEL), as_json, None, up.pid),
                "direct_binary": (v2(up.url, image.IMAGE_MODEL), as_binary, binary_headers,
                                  up.pid),
                "direct_grpc": (up.grpc, image.grpc_body(x, image.IMAGE_MODEL), None, up.pid),
                "gateway_json": (v2(gw.url, image.IMAGE_MODEL), as_json, None, gw.pid),
                "gateway_binary": (v2(gw.url, image.IMAGE_MODEL_BINARY), as_binary,
                                   binary_headers, gw.pid),
                "gateway_grpc": (gw.grpc, image.grpc_body(x, image.IMAGE_MODEL_BINARY), None,
                                 gw.pid),
            }  # fmt: skip
            return [
                Scenario(f"image_{way}_c{c}", url, body, c, pid, headers)
                for way, (url, body, headers, pid) in ways.items()
            ]

        loads, rounds = bench.measure(scenarios(1))
        more_loads, more_rounds = bench.measure(scenarios(32))
    return loads | more_loads, rounds | more_rounds
