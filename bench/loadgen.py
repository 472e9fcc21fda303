"""Load generators: POST one body at fixed concurrency for a fixed time, report percentiles.

``wrk`` is preferred: on a 2-core machine a Python generator competes with the servers it
measures. Without wrk an aiohttp generator runs in a separate process (not the benchmark's own
event loop). Both return the same generator-neutral dict, in µs as wrk counts, so results from
either parse through ``Load.from_raw``.

The Python generator also speaks gRPC: a ``grpc://host:port`` URL means ModelInfer with the
body as the serialised request. The image scenario drives all three of its modes (JSON, binary
tensor data, gRPC), directly and through the gateway, with it, so every compared pair shares
one generator.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context

import numpy as np

GRPC_SCHEME = "grpc://"  # a URL the Python generator calls over gRPC (ModelInfer)
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"
# (url, body, headers, concurrency, seconds) -> the raw dict described above
Generate = Callable[[str, bytes, Mapping[str, str], int, float], dict[str, float]]


@dataclass(frozen=True)
class Load:
    """One measured run: requests completed in a fixed time, and latency percentiles."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    errors: int
    cpu_ms_per_request: float | None = None  # of the target process, when its pid is known

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


def wrk_script(body: bytes, headers: Mapping[str, str]) -> str:
    """A wrk Lua script that POSTs ``body`` and prints exact p50/p99 as one JSON line (wrk's
    own summary rounds to 2 significant digits, too coarse for sub-millisecond overheads)."""
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


def run_wrk(
    url: str, body: bytes, headers: Mapping[str, str], concurrency: int, seconds: float
) -> dict[str, float]:
    """One wrk thread: on 2 cores a second one would only take CPU from the servers."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(wrk_script(body, headers))
    try:
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
        out = subprocess.run(
            [*cmd, "-s", script.name, url], capture_output=True, text=True, check=True
        )
    finally:
        os.unlink(script.name)
    return parse_wrk(out.stdout)


def run_python(
    url: str, body: bytes, headers: Mapping[str, str], concurrency: int, seconds: float
) -> dict[str, float]:
    """Fallback generator, in its own process so it is not also the benchmark's event loop."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        job = pool.submit(_python_load, url, body, dict(headers), concurrency, seconds)
        return job.result()


def _python_load(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float
) -> dict[str, float]:
    import uvloop

    load = _grpc_load_async if url.startswith(GRPC_SCHEME) else _python_load_async
    return uvloop.run(load(url, body, headers, concurrency, seconds))


async def _python_load_async(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float
) -> dict[str, float]:
    """``concurrency`` closed-loop workers on one pooled session, like wrk's connections."""
    import aiohttp

    latencies: list[float] = []
    failures = {"errors": 0, "non2xx": 0}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
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
    return _raw(latencies, elapsed, failures)


def grpc_metadata(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """HTTP headers as gRPC call metadata: lower-case keys, without the ones gRPC owns
    (its own content-type; ``Inference-Header-Content-Length`` is HTTP-only)."""
    own = {"content-type", "content-length", "inference-header-content-length"}
    return [(k.lower(), v) for k, v in headers.items() if k.lower() not in own]


async def _grpc_load_async(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float
) -> dict[str, float]:
    """``concurrency`` closed-loop workers calling ModelInfer on one channel (as a Triton
    client does): ``body`` is the serialised request, sent as is, and the answer is read as
    bytes, so the generator's cost per call is the same for every target it is compared on."""
    from grpc import StatusCode, aio

    latencies: list[float] = []
    failures = {"errors": 0, "non2xx": 0}
    metadata = grpc_metadata(headers)
    limit = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with aio.insecure_channel(url.removeprefix(GRPC_SCHEME), options=limit) as channel:
        infer = channel.unary_unary(GRPC_INFER)  # no (de)serialisers: bytes both ways
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            while (sent := time.perf_counter()) < deadline:
                try:
                    await infer(body, metadata=metadata, timeout=10.0)
                except aio.AioRpcError as exc:
                    failures["errors" if exc.code() == StatusCode.UNAVAILABLE else "non2xx"] += 1
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return _raw(latencies, elapsed, failures)


def _raw(latencies: list[float], elapsed: float, failures: dict[str, int]) -> dict[str, float]:
    """The generator-neutral dict (µs, as wrk counts) from latencies in seconds."""
    p50, p99 = np.percentile(latencies, [50, 99]) * 1e6
    mean = float(np.mean(latencies)) * 1e6
    return {"requests": len(latencies), "duration_us": elapsed * 1e6, "p50_us": p50,
            "p99_us": p99, "mean_us": mean, **failures}  # fmt: skip


def ensure_wrk() -> bool:
    """wrk on PATH, installing Debian's package first if we are root with apt-get."""
    if shutil.which("wrk"):
        return True
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("wrk missing: trying apt-get install -y wrk", flush=True)
        install = ["apt-get", "install", "-y", "-qq", "wrk"]
        for cmd in (install, ["apt-get", "update", "-qq"], install):
            subprocess.run(cmd, capture_output=True, timeout=600, check=False)
            if shutil.which("wrk"):
                return True
    return False


def choose_generator(choice: str) -> tuple[str, Generate]:
    """``auto`` takes wrk when it is (or can be made) available, else the Python fallback."""
    if choice != "python" and ensure_wrk():
        return "wrk", run_wrk
    if choice == "wrk":
        raise SystemExit("wrk is not installed and could not be installed")
    return "python-aiohttp (separate process)", run_python
