"""From measured loads to ``perf.json``: headline numbers, targets, and where they were taken.

The file is shared with other benchmarks, so this one replaces only its own top-level keys.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.loadgen import Load
from bench.measure import Bench

# name: (comparison, target); everything else in the table is reported without a target
TARGETS: dict[str, tuple[str, float]] = {
    "overhead_p50_ms": ("<=", 1.0),
    "overhead_p99_ms": ("<=", 3.0),
    "overhead_ratio_p50": ("<=", 1.5),
    "throughput_vs_passthrough": (">=", 1.0),
    "p99_ratio_c32": ("<=", 1.5),
    "concurrent_p50_ms": ("<=", 22.0),
    "image_binary_added_p50_ms": ("<=", 1.5),
    "image_grpc_added_p50_ms": ("<=", 1.5),
    "distill_compas_s": ("<=", 20.0),
    "distill_100k_s": ("<=", 120.0),
}
IMAGE_MODES = ("json", "binary", "grpc")  # how a client sends the image (bench.image)


def summarize(loads: dict[str, Load]) -> dict[str, float]:
    """Scenarios 1-3: overheads are differences of percentiles of the same generator."""
    d1, g1, d32, g32 = (loads[k] for k in ("direct_c1", "gateway_c1", "direct_c32", "gateway_c32"))
    p1, pt1, pt32 = loads["predict_c1"], loads["passthrough_c1"], loads["passthrough_c32"]
    u32 = loads["unbatched_c32"]
    out = {
        "overhead_p50_ms": g1.p50_ms - d1.p50_ms,
        "overhead_p99_ms": g1.p99_ms - d1.p99_ms,
        "overhead_p50_ms_c32": g32.p50_ms - d32.p50_ms,
        "overhead_p99_ms_c32": g32.p99_ms - d32.p99_ms,
        "predict_overhead_p50_ms": p1.p50_ms - d1.p50_ms,
        "predict_overhead_p99_ms": p1.p99_ms - d1.p99_ms,
        "passthrough_overhead_p50_ms": pt1.p50_ms - d1.p50_ms,
        "passthrough_overhead_p99_ms": pt1.p99_ms - d1.p99_ms,
        "throughput_vs_passthrough": g32.rps / pt32.rps,
        "gateway_rps_c32": g32.rps,
        "passthrough_rps_c32": pt32.rps,
        "direct_rps_c32": d32.rps,
        "throughput_vs_passthrough_unbatched": u32.rps / pt32.rps,
        "unbatched_rps_c32": u32.rps,
        "gateway_cpu_ms_per_req_c32": g32.cpu_ms_per_request or float("nan"),
        "unbatched_cpu_ms_per_req_c32": u32.cpu_ms_per_request or float("nan"),
        "passthrough_cpu_ms_per_req_c32": pt32.cpu_ms_per_request or float("nan"),
        "direct_cpu_ms_per_req_c32": d32.cpu_ms_per_request or float("nan"),
    } | ratios(loads)
    return {k: round(v, 3) for k, v in out.items()}


def ratios(loads: dict[str, Load]) -> dict[str, float]:
    """The gateway against the bare passthrough proxy (same generator, same rounds): added
    p50 over added p50 at 1 client, p99 over p99 at 32; and ``eraser serve --workers 2``
    against the one-process gateway at 32 clients, when that scenario ran."""
    d1, g1, pt1 = loads["direct_c1"], loads["gateway_c1"], loads["passthrough_c1"]
    g32, pt32 = loads["gateway_c32"], loads["passthrough_c32"]
    out = {
        "overhead_ratio_p50": _ratio(g1.p50_ms - d1.p50_ms, pt1.p50_ms - d1.p50_ms),
        "p99_ratio_c32": _ratio(g32.p99_ms, pt32.p99_ms),
    }
    if "workers2_c32" in loads:
        w2 = loads["workers2_c32"]
        out |= {
            "workers2_rps_c32": w2.rps,
            "workers2_vs_gateway_c32": _ratio(w2.rps, g32.rps),
            "workers2_p99_ms_c32": w2.p99_ms,
            "gateway_p99_ms_c32": g32.p99_ms,
            "workers2_cpu_ms_per_req_c32": w2.cpu_ms_per_request or float("nan"),
        }
    return out


def _ratio(num: float, den: float) -> float:
    """``num / den``; NaN (written as such, never a made-up figure) when ``den`` is not
    positive: a passthrough adding nothing measurable leaves the ratio undefined."""
    return num / den if den > 0 else float("nan")


def image_summary(loads: dict[str, Load]) -> dict[str, float]:
    """The image scenario: per way of sending the image, the gateway's p50/p99 at 1 client,
    what it adds over the stand-in called the same way, and throughput at 32 clients."""
    out: dict[str, float] = {}
    for mode in IMAGE_MODES:
        d1, g1 = loads[f"image_direct_{mode}_c1"], loads[f"image_gateway_{mode}_c1"]
        d32, g32 = loads[f"image_direct_{mode}_c32"], loads[f"image_gateway_{mode}_c32"]
        out |= {
            f"image_{mode}_p50_ms": g1.p50_ms,
            f"image_{mode}_p99_ms": g1.p99_ms,
            f"image_direct_{mode}_p50_ms": d1.p50_ms,
            f"image_direct_{mode}_p99_ms": d1.p99_ms,
            f"image_{mode}_added_p50_ms": g1.p50_ms - d1.p50_ms,
            f"image_{mode}_added_p99_ms": g1.p99_ms - d1.p99_ms,
            f"image_{mode}_rps_c32": g32.rps,
            f"image_direct_{mode}_rps_c32": d32.rps,
            f"image_{mode}_cpu_ms_per_req_c32": g32.cpu_ms_per_request or float("nan"),
        }
    # The gateway's gRPC route calls its upstream with binary HTTP: against that direct call,
    # what remains is the gateway itself, without gRPC's and HTTP's different costs upstream.
    grpc_vs_binary = loads["image_gateway_grpc_c1"].p50_ms - loads["image_direct_binary_c1"].p50_ms
    out["image_grpc_added_vs_binary_p50_ms"] = grpc_vs_binary
    return {k: round(v, 3) for k, v in out.items()}


def concurrency_summary(
    loads: dict[str, Load], patch_ms: float, delay_ms: float
) -> dict[str, float]:
    """Scenario 4. ``sequential_p50_ms_estimate`` is what calling the upstream and then the
    patch would cost: the distance from it to ``concurrent_p50_ms`` is the overlap won."""
    gateway, upstream = loads["slow_gateway_c1"].p50_ms, loads["slow_direct_c1"].p50_ms
    out = {
        "concurrent_p50_ms": gateway,
        "upstream_p50_ms": upstream,
        "upstream_delay_ms": delay_ms,
        "concurrent_overhead_p50_ms": gateway - upstream,
        "concurrent_passthrough_p50_ms": loads["slow_passthrough_c1"].p50_ms,
        "patch_ms": patch_ms,
        "sequential_p50_ms_estimate": upstream + patch_ms,
    }
    return {k: round(v, 3) for k, v in out.items()}


def scenario_json(load: Load, rounds: list[Load]) -> dict[str, Any]:
    """A scenario's merged load plus its rounds, so a reader can see the spread."""
    short = [{"p50_ms": r.p50_ms, "p99_ms": r.p99_ms, "rps": round(r.rps, 1)} for r in rounds]
    return load.as_json() | {"rounds": short}


def target_met(key: str, value: float) -> bool | None:
    """Whether ``value`` meets ``key``'s target; ``None`` when the key has none."""
    if key not in TARGETS:
        return None
    op, target = TARGETS[key]
    return value <= target if op == "<=" else value >= target


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Top-level merge: this benchmark's keys are replaced, other benchmarks' keys are kept."""
    return {**old, **new}


def write_json(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """Merge ``new`` into the JSON at ``path`` (created if missing); returns the merged dict."""
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = merge_results(old, new)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


def machine_meta(
    generator: str, bench: Bench, argv: list[str], load_start: float
) -> dict[str, Any]:
    """Where and with what the numbers were taken: they mean nothing without it. The load
    averages show whether something else shared the 2 cores during the run."""
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor() or "unknown",
    )  # fmt: skip
    pkgs = ("fastapi", "uvicorn", "uvloop", "httptools", "aiohttp", "onnxruntime", "numpy")
    versions = {p: metadata.version(p) for p in pkgs} | {"python": platform.python_version()}
    if generator == "wrk":
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
        versions["wrk"] = (out.stdout + out.stderr).split()[1]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "generator": generator,
        "seconds": bench.seconds,
        "rounds": bench.rounds,
        "warm_s": bench.warm_s,
        "loadavg_1m_start": round(load_start, 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "versions": versions,
        "command": " ".join(["python -m bench.perf", *argv]),
    }


def image_meta(bench: Bench, argv: list[str], load_start: float) -> dict[str, Any]:
    """How the image scenario was measured; it may run alone (``--only image``), so it
    carries its own date, generator and load averages."""
    from bench import image

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": "python (aiohttp; grpc.aio for gRPC), separate process",
        "seconds": bench.seconds,
        "rounds": bench.rounds,
        "warm_s": bench.warm_s,
        "input_shape": [1, *image.IMAGE_SHAPE],
        "cnn_widths": list(image.WIDTHS),
        "classes": len(image.IMAGE_CLASSES),
        "weights": "seeded random (He init), not trained",
        "upstream_grpc": True,
        "loadavg_1m_start": round(load_start, 2),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "command": " ".join(["python -m bench.perf", *argv]),
    }
