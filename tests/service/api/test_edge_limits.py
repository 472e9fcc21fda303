"""Body limits on the wire, with the gateway in its own process so that its memory can be read
(``/proc/<pid>/status``): an oversized body is refused before it is sent in full, and neither a
declared nor a streamed one makes the gateway's resident memory grow.

The gateway runs as deployed (``python -m service.cli serve``: uvloop, httptools), with a 1 MiB
limit on prediction bodies so that the streamed bodies stay a few MB.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.local.processes import free_port, launched
from service.api.edge import body_limit
from service.settings import GatewaySettings, LimitSettings
from tests.service.api.conftest import MODEL, make_settings, own_prefix, serve_env
from tests.service.api.test_edge import (
    CHUNK,
    PREDICT_AUTH,
    ROW,
    assert_documented_error,
    connect,
    exchange,
    head,
    json_request,
    read_response,
    stream_chunks,
)

pytestmark = pytest.mark.slow  # a gateway process starts (imports onnxruntime, ...)

PREDICT_BODY_MB = 1
DECLARED = 100 * 2**20  # Content-Length of the oversized request: 100 MiB
SENT = 64 * 1024  # what the client actually sends of it
MAX_RSS_GROWTH_KB = 10 * 1024


@dataclass(frozen=True)
class GatewayProcess:
    pid: int
    port: int
    settings: GatewaySettings


@pytest.fixture(scope="module")
def gateway_process(
    blackbox_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    port = free_port()
    args = ["-m", "service.cli", "serve", "--port", str(port)]
    ready = f"http://127.0.0.1:{port}/v2/health/live"
    with own_prefix() as prefix:
        settings = make_settings(prefix, blackbox_url).model_copy(
            update={"limits": LimitSettings(predict_body_mb=PREDICT_BODY_MB)}
        )
        config = Path(tmp_path_factory.mktemp("edge-limits")) / "gateway.yaml"
        env = serve_env(settings, config)
        env["ERASER_LIMITS__PREDICT_BODY_MB"] = str(PREDICT_BODY_MB)
        with launched(args, ready, f"test-edge-limits-{prefix}", env=env) as proc:
            yield GatewayProcess(proc.pid, port, settings)


@pytest.fixture
def warm(gateway_process: GatewayProcess) -> GatewayProcess:
    """One ordinary prediction first, so first-use allocations are not counted as growth."""
    with connect(gateway_process.port) as sock:
        body = {"model": MODEL, "instances": [ROW]}
        response = exchange(sock, json_request("/predict", body, PREDICT_AUTH))
    assert response.status == 200, response.body
    return gateway_process


@dataclass(frozen=True)
class Memory:
    rss_kb: int
    peak_kb: int  # VmHWM: the most resident memory since the last reset


def memory(pid: int) -> Memory:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()[0] if value.split() else ""
    return Memory(int(fields["VmRSS"]), int(fields["VmHWM"]))


def reset_peak(pid: int) -> None:
    """Set VmHWM to the current RSS (Linux: ``echo 5 > /proc/<pid>/clear_refs``), so a buffer
    allocated and freed during the request still shows in the peak."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def report(what: str, elapsed_ms: float, before: Memory, after: Memory) -> None:
    print(
        f"\n{what}: 413 after {elapsed_ms:.1f} ms; gateway RSS before {before.rss_kb} kB, "
        f"after {after.rss_kb} kB ({after.rss_kb - before.rss_kb:+d} kB), "
        f"peak during {after.peak_kb} kB ({after.peak_kb - before.rss_kb:+d} kB)"
    )


def assert_flat(before: Memory, after: Memory) -> None:
    assert after.rss_kb - before.rss_kb < MAX_RSS_GROWTH_KB
    assert after.peak_kb - before.rss_kb < MAX_RSS_GROWTH_KB


def test_declared_oversized_body_is_refused_before_it_is_sent_and_memory_stays_flat(
    warm: GatewayProcess,
) -> None:
    limit = body_limit(warm.settings, "POST", "/predict")
    assert limit < DECLARED
    headers = {**PREDICT_AUTH, "Content-Type": "application/json", "Content-Length": str(DECLARED)}
    reset_peak(warm.pid)
    before = memory(warm.pid)
    with connect(warm.port) as sock:
        start = time.perf_counter()
        # If the answer and close come first, it waits in our receive buffer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head("POST", "/predict", headers) + b"[" * SENT)
        response = read_response(sock)
        elapsed_ms = (time.perf_counter() - start) * 1000
    after = memory(warm.pid)
    report(f"Content-Length {DECLARED}, {SENT} bytes sent", elapsed_ms, before, after)
    error = assert_documented_error(response, 413)
    assert error["code"] == "payload_too_large" and error["limit_bytes"] == limit
    assert response.headers.get("connection") == "close"
    assert elapsed_ms < 1000
    assert_flat(before, after)


def test_chunked_body_past_the_limit_is_refused_while_streaming_and_memory_stays_flat(
    warm: GatewayProcess,
) -> None:
    limit = body_limit(warm.settings, "POST", "/predict")
    most = 4 * limit  # a few MB: what is sent if the gateway never answers
    headers = {**PREDICT_AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    reset_peak(warm.pid)
    before = memory(warm.pid)
    with connect(warm.port, send_buffer=CHUNK) as sock:
        start = time.perf_counter()
        sock.sendall(head("POST", "/predict", headers))
        sent, response = stream_chunks(sock, max_bytes=most)  # the stream never ends
        elapsed_ms = (time.perf_counter() - start) * 1000
    after = memory(warm.pid)
    report(f"chunked, {sent} bytes in {CHUNK}-byte chunks", elapsed_ms, before, after)
    error = assert_documented_error(response, 413)
    assert error["code"] == "payload_too_large" and error["limit_bytes"] == limit
    assert response.headers.get("connection") == "close"
    assert elapsed_ms < 1000
    assert_flat(before, after)


def test_the_gateway_still_serves_after_refusing_oversized_bodies(warm: GatewayProcess) -> None:
    """Runs last in this module: the refusals above left nothing stuck (the fixture's warm-up
    prediction checks the same before every test)."""
    with connect(warm.port) as sock:
        body = {"model": MODEL, "instances": [ROW, ROW]}
        response = exchange(sock, json_request("/predict", body, PREDICT_AUTH))
    assert response.status == 200
    assert len(response.json()["predictions"]) == 2
