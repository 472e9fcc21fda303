"""`make bench-perf`: what the gateway costs over calling the black box directly.

All scenarios run in one go, each a fixed duration after a warm-up, with the same load generator
against every target, so overheads are differences of percentiles measured minutes apart on
the same machine:

1. direct       — the stand-in upstream's own ``/v2/models/compas/infer`` (1-row body), c=1, 32;
2. gateway      — the gateway's drop-in v2 route with one small tabular MLP patch, c=1, 32, and
                  ``/predict`` with the equivalent body at c=1;
3. passthrough  — ``bench.passthrough`` (same server stack, no patch), c=1, 32: the baseline for
                  ``throughput_vs_passthrough``;
4. concurrency  — a stand-in that sleeps 20 ms and a gateway whose patch takes ≈10 ms at the batch
                  sent: upstream and patch overlap, so the end-to-end p50 should be ≈20 ms.

The generator is ``wrk`` (installed with apt-get when missing and possible): a Python generator
would compete with the servers for the machine's cores. Without wrk an aiohttp generator runs in
a separate process, and the JSON says so. Results merge into ``bench/results/perf.json`` and
regenerate the Performance section of ``BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import yaml

from deploy.local.processes import (
    CACHE,
    ROOT,
    clear_redis_prefix,
    free_port,
    launched,
    standin_model_config,
)

PREFIX = "eraser-bench"
MODEL = "compas"
KEYS = {"ERASER_PREDICT_API_KEY": "bench-predict-key", "ERASER_ADMIN_API_KEY": "bench-admin-key"}
PREDICT_HEADERS = {
    "Authorization": f"Bearer {KEYS['ERASER_PREDICT_API_KEY']}",
    "Content-Type": "application/json",
}
ADMIN_HEADERS = {"Authorization": f"Bearer {KEYS['ERASER_ADMIN_API_KEY']}"}
RESULTS = ROOT / "bench" / "results" / "perf.json"
MARKDOWN = ROOT / "BENCHMARKS.md"
MD_START, MD_END = "<!-- perf:start -->", "<!-- perf:end -->"
UPSTREAM_DELAY_MS = 20.0
PATCH_TARGET_MS = 10.0
HEAVY_DEPTH = 3  # two width x width Gemms: cost (and file size) grow as width²
V2_INFER = f"/v2/models/{MODEL}/infer"

# name: (comparison, target); everything else in the table is reported without a target
TARGETS: dict[str, tuple[str, float]] = {
    "overhead_p50_ms": ("<=", 1.0),
    "overhead_p99_ms": ("<=", 3.0),
    "throughput_vs_passthrough": (">=", 0.8),
    "concurrent_p50_ms": ("<=", 22.0),
}


# ---- load generators -------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One measured scenario: requests completed in a fixed time, and latency percentiles."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @classmethod
    def from_raw(cls, raw: dict[str, float]) -> Load:
        """From the generator-neutral dict both generators print (µs, as wrk counts)."""
        return cls(
            requests=int(raw["requests"]),
            duration_s=raw["duration_us"] / 1e6,
            p50_ms=raw["p50_us"] / 1e3,
            p99_ms=raw["p99_us"] / 1e3,
            mean_ms=raw["mean_us"] / 1e3,
            errors=int(raw["errors"] + raw["non2xx"]),
        )

    def as_json(self) -> dict[str, float]:
        return {**asdict(self), "rps": round(self.rps, 1)}


WRK_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %.1f, "p99_us": %.1f, ' ..
    '"mean_us": %.1f, "errors": %d, "non2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def wrk_script(body: bytes, headers: dict[str, str]) -> str:
    """A wrk Lua script that POSTs ``body`` and prints exact p50/p99 as one JSON line."""
    text = body.decode()
    level = "=" * next(n for n in range(1, 10) if f"]{'=' * n}]" not in text)
    lines = ['wrk.method = "POST"', f"wrk.body = [{level}[{text}]{level}]"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    return "\n".join(lines) + WRK_DONE


def parse_wrk(stdout: str) -> dict[str, float]:
    """The ``WRK_JSON`` line printed by the script's ``done()``."""
    match = re.search(r"^WRK_JSON (\{.*\})$", stdout, re.MULTILINE)
    if match is None:
        raise ValueError(f"no WRK_JSON line in wrk output:\n{stdout}")
    return json.loads(match.group(1))


def run_wrk(url: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """One wrk thread: on 2 cores a second one would only take CPU from the servers."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(body, PREDICT_HEADERS))
    try:
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
        out = subprocess.run(
            [*cmd, "-s", script.name, url], capture_output=True, text=True, check=True
        )
    finally:
        os.unlink(script.name)
    return parse_wrk(out.stdout)


def run_python(url: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    """Fallback generator, in its own process so it is not also the benchmark's event loop."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_python_load, url, body, concurrency, seconds).result()


def _python_load(url: str, body: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    import uvloop

    return uvloop.run(_python_load_async(url, body, concurrency, seconds))


async def _python_load_async(
    url: str, body: bytes, concurrency: int, seconds: float
) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    failures = {"errors": 0, "non2xx": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=PREDICT_HEADERS) as session:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            while (sent := time.perf_counter()) < deadline:
                try:
                    async with session.post(url, data=body) as response:
                        await response.read()
                        failures["non2xx"] += response.status != 200
                except aiohttp.ClientError:
                    failures["errors"] += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e6
    mean = float(np.mean(latencies)) * 1e6
    return {"requests": len(latencies), "duration_us": elapsed * 1e6, "p50_us": p50,
            "p99_us": p99, "mean_us": mean, **failures}  # fmt: skip


def ensure_wrk() -> bool:
    """wrk on PATH, installing Debian's package first if we are root with apt-get."""
    if shutil.which("wrk"):
        return True
    if shutil.which("apt-get") and os.geteuid() == 0:
        install = ["apt-get", "install", "-y", "-qq", "wrk"]
        for cmd in (install, ["apt-get", "update", "-qq"], install):
            subprocess.run(cmd, capture_output=True, timeout=600, check=False)
            if shutil.which("wrk"):
                return True
    return False


# ---- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    """How every scenario is measured: the same generator and durations against each target."""

    generate: Callable[[str, bytes, int, float], dict[str, float]]
    seconds: float
    warm_s: float

    def measure(self, url: str, body: bytes, concurrency: int) -> Load:
        """Warm at the same concurrency (connections, caches, ORT arenas), then measure."""
        self.generate(url, body, concurrency, self.warm_s)
        load = Load.from_raw(self.generate(url, body, concurrency, self.seconds))
        if load.errors:
            raise RuntimeError(f"{url} c={concurrency}: {load.errors} failed requests")
        print(
            f"  {url} c={concurrency:<2}  p50 {load.p50_ms:7.2f} ms  p99 {load.p99_ms:7.2f} ms"
            f"  {load.rps:8.1f} req/s",
            flush=True,
        )
        return load


def v2_body(rows: np.ndarray) -> bytes:
    """The OIP v2 request a client sends to the upstream, and unchanged to the gateway."""
    tensor = {"name": "x", "shape": list(rows.shape), "datatype": "FP32",
              "data": rows.reshape(-1).tolist()}  # fmt: skip
    return orjson.dumps({"inputs": [tensor]})


def predict_body(rows: np.ndarray) -> bytes:
    return orjson.dumps({"model": MODEL, "instances": rows.tolist()})


@contextmanager
def standin(delay_ms: float) -> Iterator[str]:
    """The stand-in black box on a free port; yields its base URL."""
    port = free_port()
    model_path = CACHE / "models" / "compas_mlp.npz"
    args = ["-m", "blackbox", "serve", "--port", str(port), "--model-path", str(model_path)]
    args += ["--delay-ms", str(delay_ms)]
    url = f"http://127.0.0.1:{port}"
    with launched(args, f"{url}/v2/health/ready", f"bench-blackbox-{delay_ms:g}ms"):
        yield url


@contextmanager
def gateway(upstream: str, label: str) -> Iterator[str]:
    """A gateway process in front of ``upstream``, registry under the bench's own prefix."""
    config = CACHE / "bench" / f"eraser-{label}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"models": [standin_model_config(upstream, MODEL)]}))
    env = {**KEYS, "ERASER_CONFIG_FILE": str(config), "ERASER_REDIS__KEY_PREFIX": PREFIX}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "service.cli", "serve", "--port", str(port)]
    with launched(args, f"{url}/v2/health/ready", f"bench-gateway-{label}", env=env):
        yield url


@contextmanager
def passthrough(upstream: str) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["-m", "bench.passthrough", "--port", str(port), "--upstream", upstream + V2_INFER]
    with launched(args, f"{url}/health", "bench-passthrough"):
        yield url


def activate_patch(gw_url: str, name: str, blob: bytes, probe: bytes) -> None:
    """Register ``blob`` over the operator API, make it the whole stack, and wait until a
    request through the v2 route comes back debiased by it."""
    spec = {"kind": "custom", "model": MODEL, "classes": _classes(), "input_shape": [7],
            "training_config": {"bench": True}}  # fmt: skip
    with httpx.Client(base_url=gw_url, headers=ADMIN_HEADERS, timeout=120) as gw:
        r = gw.post(
            f"/patches/{name}/versions",
            data={"manifest": orjson.dumps(spec).decode()},
            files={"artifact": (f"{name}.onnx", blob, "application/octet-stream")},
        )
        r.raise_for_status()
        revision = gw.get(f"/models/{MODEL}/stack").json()["stack"]["revision"]
        entry = {"patch": name, "version": r.json()["version"], "alpha": 1.0}
        body = {"entries": [entry], "expected_revision": revision, "reason": "bench"}
        gw.put(f"/models/{MODEL}/stack", json=body).raise_for_status()
    _wait_debiased(gw_url, name, probe)


def _wait_debiased(gw_url: str, name: str, probe: bytes, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = httpx.post(gw_url + V2_INFER, content=probe, headers=PREDICT_HEADERS, timeout=30)
        params = r.json().get("parameters", {}) if r.status_code == 200 else {}
        if params.get("debiased") and [p["name"] for p in params["patches"]] == [name]:
            return
        time.sleep(0.2)
    raise TimeoutError(f"gateway {gw_url} did not start serving patch {name}")


def _classes() -> list[str]:
    from blackbox.model import CLASSES

    return list(CLASSES)


# ---- patches ---------------------------------------------------------------------------------


def small_patch(x: np.ndarray, y: np.ndarray) -> bytes:
    """A realistic tabular patch: standardisation + one hidden layer of 32, fitted on the
    vendored COMPAS calibration rows (labels as targets: its values do not matter here)."""
    from patch_training.export.mlp_onnx import fit_mlp_patch

    return fit_mlp_patch(x, y, hidden=(32,), seed=0, max_iter=200)


def patch_median_ms(blob: bytes, batch: np.ndarray, runs: int) -> float:
    """Median ORT latency with the gateway's session options (one intra-op thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
    for _ in range(5):
        session.run(None, {"x": batch})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"x": batch})
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def calibrate_heavy(batch: np.ndarray, target_ms: float) -> tuple[bytes, int, float]:
    """``heavy_patch`` whose median at this batch is ≈ ``target_ms``: cost grows as width², so
    each step rescales the width by sqrt(target / measured) (multiple of 32, ≤ 5 steps)."""
    from patch_training.export.mlp_onnx import heavy_patch

    width, blob, ms = 512, b"", 0.0
    for _ in range(5):
        blob = heavy_patch(batch.shape[1], len(_classes()), width, HEAVY_DEPTH)
        ms = patch_median_ms(blob, batch, runs=30)
        print(f"  heavy patch width {width}: {ms:.2f} ms at batch {len(batch)}", flush=True)
        if abs(ms - target_ms) <= 0.05 * target_ms:
            break
        width = max(32, round(width * (target_ms / ms) ** 0.5 / 32) * 32)
    else:
        blob = heavy_patch(batch.shape[1], len(_classes()), width, HEAVY_DEPTH)
    return blob, width, patch_median_ms(blob, batch, runs=100)


# ---- scenarios -------------------------------------------------------------------------------


def fast_phase(bench: Bench, rows: np.ndarray, patch: bytes) -> dict[str, Load]:
    """Scenarios 1-3: one zero-delay upstream behind the gateway and behind the passthrough."""
    v2, pred = v2_body(rows[:1]), predict_body(rows[:1])
    loads: dict[str, Load] = {}
    with ExitStack() as stack:
        up = stack.enter_context(standin(0.0))
        gw = stack.enter_context(gateway(up, "fast"))
        pt = stack.enter_context(passthrough(up))
        activate_patch(gw, "bench-mlp32", patch, v2)
        for c in (1, 32):
            loads[f"direct_c{c}"] = bench.measure(up + V2_INFER, v2, c)
            loads[f"gateway_c{c}"] = bench.measure(gw + V2_INFER, v2, c)
            loads[f"passthrough_c{c}"] = bench.measure(pt + V2_INFER, v2, c)
        loads["predict_c1"] = bench.measure(gw + "/predict", pred, 1)
    return loads


def slow_phase(bench: Bench, rows: np.ndarray, patch: bytes) -> dict[str, Load]:
    """Scenario 4: upstream (20 ms) and patch (≈10 ms) run concurrently inside the gateway."""
    body = v2_body(rows)
    with standin(UPSTREAM_DELAY_MS) as up, gateway(up, "slow") as gw:
        activate_patch(gw, "bench-heavy", patch, body)
        return {
            "slow_direct_c1": bench.measure(up + V2_INFER, body, 1),
            "slow_gateway_c1": bench.measure(gw + V2_INFER, body, 1),
        }


# ---- results ---------------------------------------------------------------------------------


def summarize(loads: dict[str, Load]) -> dict[str, float]:
    """The headline numbers: overheads are differences of percentiles of the same generator."""
    d1, g1, d32, g32 = (loads[k] for k in ("direct_c1", "gateway_c1", "direct_c32", "gateway_c32"))
    p1, pt1, pt32 = loads["predict_c1"], loads["passthrough_c1"], loads["passthrough_c32"]
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
        "concurrent_p50_ms": loads["slow_gateway_c1"].p50_ms,
        "upstream_p50_ms": loads["slow_direct_c1"].p50_ms,
    }
    return {k: round(v, 3) for k, v in out.items()}


def target_met(key: str, value: float) -> bool | None:
    if key not in TARGETS:
        return None
    op, target = TARGETS[key]
    return value <= target if op == "<=" else value >= target


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Top-level merge: this benchmark's keys are replaced, other benchmarks' keys are kept."""
    return {**old, **new}


def write_json(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    old = json.loads(path.read_text()) if path.exists() else {}
    merged = merge_results(old, new)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return merged


TABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    # key, label, unit
    ("overhead_p50_ms", "Added latency p50, 1 client (v2 route, MLP-32 patch)", "ms"),
    ("overhead_p99_ms", "Added latency p99, 1 client", "ms"),
    ("overhead_p50_ms_c32", "Added latency p50, 32 clients", "ms"),
    ("overhead_p99_ms_c32", "Added latency p99, 32 clients", "ms"),
    ("predict_overhead_p50_ms", "Added latency p50, 1 client, `/predict`", "ms"),
    ("passthrough_overhead_p50_ms", "Added latency p50, 1 client, bare passthrough", "ms"),
    ("throughput_vs_passthrough", "Throughput at 32 clients ÷ bare passthrough", "×"),
    ("gateway_rps_c32", "Gateway throughput, 32 clients", "req/s"),
    ("passthrough_rps_c32", "Passthrough throughput, 32 clients", "req/s"),
    ("direct_rps_c32", "Stand-in upstream alone, 32 clients", "req/s"),
    ("concurrent_p50_ms", "End-to-end p50, 20 ms upstream ∥ ≈10 ms patch", "ms"),
    ("upstream_p50_ms", "… that upstream alone, p50", "ms"),
    ("patch_ms", "… that patch alone (ORT median, 1 thread)", "ms"),
)


def markdown_section(res: dict[str, Any]) -> str:
    """The Performance section: metric, measured, target, met?, then how it was measured."""
    lines = ["| metric | measured | target | met? |", "|---|---:|---:|:---:|"]
    for key, label, unit in TABLE_ROWS:
        value, met = res[key], target_met(key, res[key])
        cells = [label, f"{value:.2f} {unit}", _target_text(key)]
        cells.append("—" if met is None else ("yes" if met else "**no**"))
        lines.append("| " + " | ".join(cells) + " |")
    meta, heavy = res["perf_meta"], res["heavy_patch"]
    return "\n".join([
        MD_START, "## Performance", "",
        f"Measured {meta['date']} on {meta['cores']} cores ({meta['cpu']}), generator "
        f"`{meta['generator']}`, {meta['seconds']:g} s per scenario after a {meta['warm_s']:g} s "
        "warm-up, all in one run (`bench/results/perf.json`). Added latency = percentile through "
        "the gateway − the same percentile calling the stand-in upstream directly (1-row OIP v2 "
        "body, same generator). The stand-in, the gateway and the generator share the machine.",
        "", *lines, "",
        f"Concurrency scenario: batches of {heavy['batch']} rows (so the patch stays "
        f"{heavy['mb']:.1f} MB), `heavy_patch(width={heavy['width']}, depth={heavy['depth']})`; "
        "the upstream sleeps 20 ms per request.",
        "", "Reproduce: `make bench-perf` (smoke run: `python -m bench.perf --quick`).", MD_END,
    ])  # fmt: skip


def _target_text(key: str) -> str:
    if key not in TARGETS:
        return "—"
    op, value = TARGETS[key]
    return f"{'≤' if op == '<=' else '≥'} {value:g}"


def replace_section(text: str, section: str) -> str:
    """Swap the text between the perf markers, or append the section if there is none."""
    start, end = text.find(MD_START), text.find(MD_END)
    if start != -1 and end > start:
        return text[:start] + section + text[end + len(MD_END) :]
    base = text.rstrip("\n") if text.strip() else "# Benchmarks"
    return f"{base}\n\n{section}\n"


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    text = path.read_text() if path.exists() else ""
    path.write_text(replace_section(text, markdown_section(res)))


def machine_meta(generator: str, bench: Bench, argv: list[str]) -> dict[str, Any]:
    """Where and with what the numbers were taken: they mean nothing without it."""
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
        "warm_s": bench.warm_s,
        "versions": versions,
        "command": " ".join(["python -m bench.perf", *argv]),
    }


# ---- entry point -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Gateway performance benchmark (all scenarios).")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario: a smoke run")
    parser.add_argument("--seconds", type=float, help="per scenario (default 10, 3 with --quick)")
    parser.add_argument("--out", type=Path, help=f"JSON (default {RESULTS.relative_to(ROOT)}; "
                        "with --quick .cache/bench/perf-quick.json)")  # fmt: skip
    parser.add_argument("--markdown", type=Path, help="default BENCHMARKS.md, none with --quick")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--batch", type=int, default=128, help="rows per concurrency request")
    return parser.parse_args(argv)


def choose_generator(choice: str) -> tuple[str, Callable[..., dict[str, float]]]:
    if choice != "python" and ensure_wrk():
        return "wrk", run_wrk
    if choice == "wrk":
        raise SystemExit("wrk is not installed and could not be installed")
    return "python-aiohttp (separate process)", run_python


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    out = args.out or (CACHE / "bench" / "perf-quick.json" if args.quick else RESULTS)
    markdown = args.markdown or (None if args.quick else MARKDOWN)
    name, generate = choose_generator(args.generator)
    bench = Bench(generate, seconds, warm_s=1.0 if args.quick else 2.0)
    print(f"generator: {name}, {seconds:g} s per scenario", flush=True)

    from blackbox.data import compas_split, load_compas

    data = load_compas()
    split = compas_split(data, seed=0)
    rows = np.resize(data.X[split.test], (max(args.batch, 1), data.X.shape[1]))
    print("calibrating the heavy patch", flush=True)
    heavy, width, patch_ms = calibrate_heavy(rows, PATCH_TARGET_MS)
    small = small_patch(data.X[split.calib], data.y[split.calib])
    clear_redis_prefix(PREFIX)
    try:
        print("scenarios 1-3: direct, gateway, passthrough", flush=True)
        loads = fast_phase(bench, rows, small)
        clear_redis_prefix(PREFIX)
        print("scenario 4: 20 ms upstream ∥ 10 ms patch", flush=True)
        loads |= slow_phase(bench, rows, heavy)
    finally:
        clear_redis_prefix(PREFIX)
    heavy_meta = {"batch": len(rows), "width": width, "depth": HEAVY_DEPTH,
                  "mb": round(len(heavy) / 1e6, 2)}  # fmt: skip
    result = summarize(loads) | {
        "patch_ms": round(patch_ms, 3),
        "heavy_patch": heavy_meta,
        "perf_meta": machine_meta(name.split()[0], bench, argv),
        "perf_scenarios": {k: v.as_json() for k, v in loads.items()},
    }
    result["perf_targets_met"] = {k: target_met(k, result[k]) for k in TARGETS}
    write_json(out, result)
    if markdown is not None:
        write_markdown(markdown, result)
    print(markdown_section(result))


if __name__ == "__main__":
    main()
