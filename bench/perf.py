"""`make bench-perf`: what the gateway costs over calling the black box directly.

All scenarios run in one go with the same load generator against every target; compared
targets are warmed, then measured in interleaved rounds of fixed duration, so overheads are
differences of percentiles taken seconds apart on the same machine:

1. direct       — the stand-in upstream's own ``/v2/models/compas/infer`` (1-row body), c=1, 32;
2. gateway      — the gateway's drop-in v2 route with one small tabular MLP patch, c=1, 32, and
                  ``/predict`` with the equivalent body at c=1;
3. passthrough  — ``bench.passthrough`` (same server stack, no patch), c=1, 32: the baseline for
                  ``throughput_vs_passthrough``;
4. concurrency  — a stand-in calibrated to a 20 ms direct p50 and a gateway whose patch takes
                  ≈10 ms at the batch sent (1 row by default): upstream and patch overlap, so
                  the end-to-end p50 should be ≈20 ms, not ≈30.
5. distill      — ``eraser train eraser`` on 1,000 COMPAS calibration rows, end to end
                  (``bench.distill``): ``distill_compas_s``.
6. image        — a 1×3×64×64 FP32 small CNN on the stand-in and a small-CNN patch
                  (``bench.image``; seeded random weights: latency does not depend on what
                  they learned), each way a client sends the image — JSON, binary tensor data,
                  gRPC — directly and through the gateway, c=1 and 32: ``image_*`` keys. All
                  six targets share the Python generator (wrk cannot speak gRPC).

Scenario 2 also runs ``eraser serve --workers 2`` at c=32 (``workers2_*``), and the ratio keys
compare the gateway with the bare passthrough: ``overhead_ratio_p50``, ``p99_ratio_c32``.

This module is the CLI and the order of work; the parts live in ``bench.loadgen`` (wrk or a
Python fallback), ``bench.measure`` (interleaved rounds), ``bench.servers`` (the processes),
``bench.patches`` and ``bench.upstream`` (calibration), ``bench.scenarios`` (the phases),
``bench.report`` (``bench/results/perf.json``) and ``bench.markdown`` (``BENCHMARKS.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bench import image
from bench.common import MARKDOWN, PREDICT_HEADERS, PREFIX, RESULTS
from bench.distill import measure_distill
from bench.distill_scaling import DEFAULT_ROWS, scaling_result
from bench.loadgen import choose_generator, run_python
from bench.markdown import markdown_section, write_markdown
from bench.measure import Bench, Measured
from bench.patches import calibrate_heavy, patch_median_ms, small_patch
from bench.report import (
    TARGETS,
    concurrency_summary,
    image_meta,
    image_summary,
    machine_meta,
    scenario_json,
    summarize,
    target_met,
    write_json,
)
from bench.scenarios import fast_phase, image_phase, slow_phase
from deploy.local.processes import CACHE, ROOT, clear_redis_prefix

PATCH_TARGET_MS = 10.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Gateway performance benchmark (all scenarios).")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario: a smoke run")
    parser.add_argument("--seconds", type=float, help="per scenario (default 12, 3 with --quick)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, 1 with --quick)")
    parser.add_argument("--out", type=Path, help=f"JSON (default {RESULTS.relative_to(ROOT)}; "
                        "with --quick .cache/bench/perf-quick.json)")  # fmt: skip
    parser.add_argument("--markdown", type=Path, help="default BENCHMARKS.md, none with --quick")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--only", choices=("all", "gateway", "image", "distill"),
                        default="all",
                        help="run a subset; results merge into the same JSON")  # fmt: skip
    parser.add_argument("--markdown-only", action="store_true",
                        help="measure nothing: rewrite the Performance section of --markdown "
                        "(default BENCHMARKS.md) from the JSON at --out")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1,
                        help="rows per concurrency request (the scenario is about overlap, "
                        "not payload size)")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.markdown_only:
        res = json.loads((args.out or RESULTS).read_text())
        write_markdown(args.markdown or MARKDOWN, res)
        return
    load_start = os.getloadavg()[0]
    seconds = args.seconds or (3.0 if args.quick else 12.0)
    rounds = args.rounds or (1 if args.quick else 3)
    out = args.out or (CACHE / "bench" / "perf-quick.json" if args.quick else RESULTS)
    markdown = args.markdown or (None if args.quick else MARKDOWN)
    result: dict[str, Any] = {}
    if args.only in ("all", "gateway"):
        result |= gateway_scenarios(args, argv, seconds, rounds, load_start)
    if args.only in ("all", "distill"):
        print("scenario 5: the COMPAS distillation job, end to end", flush=True)
        result |= measure_distill(runs=1 if args.quick else 3)
        rows = [1000] if args.quick else list(DEFAULT_ROWS)
        print(f"scenario 7: one distill job per calibration size {rows}", flush=True)
        result |= scaling_result(rows)
    if args.only in ("all", "image"):
        result |= image_scenarios(args, argv, seconds, rounds)
    merged = write_json(out, result)
    merged = write_json(out, {"perf_targets_met": targets_met(merged)})
    if markdown is not None:
        write_markdown(markdown, merged)
    print(markdown_section(merged))


def gateway_scenarios(
    args: argparse.Namespace, argv: list[str], seconds: float, rounds: int, load_start: float
) -> dict[str, Any]:
    """Scenarios 1-4 (the gateway's own costs), with where and how they were taken."""
    name, generate = choose_generator(args.generator)
    warm_s = 1.0 if args.quick else 2.0
    bench = Bench(generate, PREDICT_HEADERS, seconds, warm_s=warm_s, rounds=rounds)
    print(f"generator: {name}, {seconds:g} s per scenario in {rounds} round(s)", flush=True)

    from blackbox.data import compas_split, load_compas

    data = load_compas()
    split = compas_split(data, seed=0)
    rows = np.resize(data.X[split.test], (max(args.batch, 1), data.X.shape[1]))
    print(f"calibrating the heavy patch to {PATCH_TARGET_MS:g} ms", flush=True)
    heavy = calibrate_heavy(rows, PATCH_TARGET_MS)
    small = small_patch(data.X[split.calib], data.y[split.calib])
    clear_redis_prefix(PREFIX)
    try:
        print("scenarios 1-3: direct, gateway, passthrough", flush=True)
        fast = fast_phase(bench, rows[:1], small)
        clear_redis_prefix(PREFIX)
        print("scenario 4: calibrating a 20 ms upstream, then upstream ∥ patch", flush=True)
        slow, calibration = slow_phase(bench, rows, heavy)
    finally:
        clear_redis_prefix(PREFIX)
    return results(fast, slow, heavy.meta(), calibration) | {
        "perf_meta": machine_meta(name.split()[0], bench, argv, load_start),
    }


def image_scenarios(
    args: argparse.Namespace, argv: list[str], seconds: float, rounds: int
) -> dict[str, Any]:
    """Scenario 6, with its own generator and where it ran (``image_meta``)."""
    load_start = os.getloadavg()[0]
    warm_s = 1.0 if args.quick else 2.0
    bench = Bench(run_python, PREDICT_HEADERS, seconds, warm_s=warm_s, rounds=rounds)
    print("scenario 6: a 1×3×64×64 small CNN over JSON, binary tensor data and gRPC", flush=True)
    clear_redis_prefix(PREFIX)
    try:
        loads, per_round = image_phase(bench, CACHE / "bench" / "image-models")
    finally:
        clear_redis_prefix(PREFIX)
    patch_ms = patch_median_ms(image.image_patch(), image.image(), runs=100)
    return image_summary(loads) | {
        "image_scenarios": {k: scenario_json(v, per_round[k]) for k, v in loads.items()},
        "image_meta": image_meta(bench, argv, load_start) | {"patch_ms": round(patch_ms, 3)},
    }


def targets_met(res: dict[str, Any]) -> dict[str, bool | None]:
    """Every target whose metric has been measured (in this run or a merged earlier one)."""
    return {k: target_met(k, res[k]) for k in TARGETS if k in res}


def results(
    fast: Measured, slow: Measured, heavy: dict[str, Any], calibration: dict[str, Any]
) -> dict[str, Any]:
    """This benchmark's top-level keys in ``perf.json`` (all but ``perf_meta``)."""
    loads, per_round = fast[0] | slow[0], fast[1] | slow[1]
    result: dict[str, Any] = summarize(loads) | concurrency_summary(
        loads, heavy["patch_ms"], calibration["delay_ms"]
    )
    result |= {
        "heavy_patch": heavy,
        "upstream_calibration": calibration,
        "perf_scenarios": {k: scenario_json(v, per_round[k]) for k, v in loads.items()},
    }
    return result


if __name__ == "__main__":
    main()
