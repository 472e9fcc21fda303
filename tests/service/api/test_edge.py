"""The request edge against a real uvicorn server on loopback (httptools), over raw sockets where
the wire matters: credentials before bodies, bodies refused while they stream, the documented
error body for every failure (framework errors and escaped bugs included), keep-alive kept.

Body limits with memory measured on a gateway in its own process: ``test_edge_limits.py``.
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastapi.routing
import httpx
import orjson
import pytest
import redis
from fastapi.routing import APIRoute

from blackbox.data import FEATURE_NAMES
from service.api import edge, errors
from service.api.app import create_app
from service.api.edge import body_limit
from service.api.throttled_log import ThrottledLog
from service.dataplane import Dataplane
from service.registry.keys import RegistryKeys
from service.settings import GatewaySettings, LimitSettings
from tests.conftest import REDIS_URL
from tests.fixtures_upstream import refused_port
from tests.servers import running_server
from tests.service.api.conftest import ADMIN_KEY, MODEL, PREDICT_KEY, make_settings

PREDICT_AUTH = {"Authorization": f"Bearer {PREDICT_KEY}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
PROMPT_S = 1.0  # an answer that does not wait for the body comes back in milliseconds
ROW = [25, 3, 0, 0, 1, 1, 1]
HUGE_INT = 10**400  # a JSON integer: 1 followed by 400 zeros, beyond every float
CHUNK = 64 * 1024
# uvloop, as `eraser-gateway serve` runs. (With the asyncio loop, tests.servers' listening socket
# has proto 0, so asyncio never sets TCP_NODELAY and each keep-alive request waits ~40 ms.)
SERVE = {"loop": "uvloop"}


# ---------------------------------------------------------------- raw HTTP/1.1 over a socket


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def connect(port: int, timeout_s: float = 5.0, send_buffer: int | None = None) -> socket.socket:
    """A client socket; a small ``send_buffer`` keeps what the kernel queues for a streamed
    body small, so the bytes sent before an answer are close to what the server read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.connect(("127.0.0.1", port))
    return sock


def head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    """A request line and headers, nothing else: the caller decides what body follows."""
    lines = [f"{method} {path} HTTP/1.1", "Host: gateway"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    """A whole request with its Content-Length."""
    return head(method, path, {**(headers or {}), "Content-Length": str(len(body))}) + body


def json_request(path: str, doc: Any, headers: dict[str, str] | None = None) -> bytes:
    body = json.dumps(doc).encode()  # the stdlib writes integers of any size, as JSON allows
    return request("POST", path, {"Content-Type": "application/json", **(headers or {})}, body)


def read_response(sock: socket.socket) -> RawResponse:
    """One response (the gateway always sends Content-Length); fails if the server closes
    the connection before a whole response arrived."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock)
    raw_head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        body += _recv(sock)
    return RawResponse(int(status_line.split()[1]), headers, body[:length])


def exchange(sock: socket.socket, raw_request: bytes) -> RawResponse:
    sock.sendall(raw_request)
    return read_response(sock)


def _recv(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    return chunk


def stream_chunks(sock: socket.socket, max_bytes: int) -> tuple[int, RawResponse]:
    """Send 64 KiB chunks until the server answers or ``max_bytes`` went out, then wait for the
    answer; returns (bytes sent, the response). The final empty chunk is never sent: a server
    that waits for the end of the body never answers (the read times out)."""
    frame = f"{CHUNK:x}\r\n".encode() + b"7" * CHUNK + b"\r\n"
    sent = 0
    while sent < max_bytes and not select.select([sock], [], [], 0)[0]:
        try:
            sock.sendall(frame)
        except (BrokenPipeError, ConnectionResetError):
            break  # the server answered and closed: its answer is in our receive buffer
        sent += CHUNK
    return sent, read_response(sock)


def assert_documented_error(response: RawResponse | httpx.Response, status: int) -> dict:
    got = response.status_code if isinstance(response, httpx.Response) else response.status
    doc = response.json()
    assert got == status, doc
    assert set(doc) == {"error"}, doc  # never {"detail": ...}
    error = doc["error"]
    if isinstance(error, str):  # an inference protocol's route: {"error": "<message>"}
        headers = {k.lower(): v for k, v in response.headers.items()}
        error = {"code": headers["x-eraser-error-code"], "message": error}
    assert isinstance(error["code"], str) and error["code"], doc
    assert isinstance(error["message"], str) and error["message"], doc
    return error


# ---------------------------------------------------------------- servers


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Gateway:
    url: str
    settings: GatewaySettings
    redis: redis.Redis  # for writing records as someone with access to Redis would

    @property
    def port(self) -> int:
        return port_of(self.url)


@pytest.fixture(scope="module")
def gateway(blackbox_url: str) -> Iterator[Gateway]:
    """One gateway for the tests that need no settings of their own (each start and stop costs
    seconds); its own key prefix, deleted afterwards."""
    prefix = f"eraser-test-{uuid.uuid4().hex[:10]}"
    settings = make_settings(prefix, blackbox_url)
    with redis.Redis.from_url(REDIS_URL) as client:
        try:
            with running_server(create_app(settings), **SERVE) as url:
                yield Gateway(url, settings, client)
        finally:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
            if keys:
                client.delete(*keys)


def small_limits(settings: GatewaySettings) -> GatewaySettings:
    """1 MiB for every body, so a stream past it stays small."""
    limits = LimitSettings(predict_body_mb=1, json_body_mb=1, upload_overhead_mb=0.5)
    return settings.model_copy(update={"limits": limits, "max_artifact_mb": 0.5})


# ---------------------------------------------------------------- 1. bodies refused while read


def test_chunked_upload_past_its_limit_is_refused_before_the_stream_ends(
    key_prefix: str, blackbox_url: str, redis_client: object
) -> None:
    settings = small_limits(make_settings(key_prefix, blackbox_url))
    limit = body_limit(settings, "POST", "/patches/p/versions")
    form_head = (
        b'--b\r\nContent-Disposition: form-data; name="artifact"; filename="p.onnx"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    headers = {
        **ADMIN_AUTH,
        "Content-Type": "multipart/form-data; boundary=b",
        "Transfer-Encoding": "chunked",
    }
    with (
        running_server(create_app(settings), **SERVE) as url,
        connect(port_of(url), send_buffer=CHUNK) as sock,
    ):
        start = time.perf_counter()
        sock.sendall(head("POST", "/patches/p/versions", headers))
        sock.sendall(f"{len(form_head):x}\r\n".encode() + form_head + b"\r\n")
        sent, response = stream_chunks(sock, max_bytes=4 * limit)
        elapsed_ms = (time.perf_counter() - start) * 1000
    print(f"chunked upload: 413 after {sent} bytes sent, {elapsed_ms:.0f} ms (limit {limit})")
    error = assert_documented_error(response, 413)
    assert error["code"] == "payload_too_large"
    assert response.headers.get("connection") == "close"


# ---------------------------------------------------------------- 2. credentials before bodies


@dataclass(frozen=True)
class BodyRoute:
    method: str
    path: str  # with {placeholders}
    parses_body: bool  # FastAPI would read and parse a declared body before the dependencies

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def body_routes() -> list[BodyRoute]:
    """Every route of the app that takes a body (POST or PUT), read from the app itself."""
    app = create_app(make_settings("unused", "http://127.0.0.1:1"))
    # FastAPI >= 0.16x keeps included routers nested in app.routes; this flattens them.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    found = []
    for context in flatten(app.routes) if flatten else app.routes:
        route = getattr(context, "original_route", context)
        if isinstance(route, APIRoute):
            for method in sorted(context.methods & {"POST", "PUT"}):
                found.append(BodyRoute(method, context.path, route.body_field is not None))
    return found


BODY_ROUTES = body_routes()
EXPECTED_BODY_ROUTES = {
    "POST /predict",
    "POST /v2/models/{model}/infer",
    "POST /feedback",
    "PUT /models/{model}/stack",
    "POST /models/{model}/stack/rollback",
    "POST /patches",
    "POST /patches/{name}/versions",
}


def test_body_routes_are_enumerated_and_declare_no_body_parameter() -> None:
    assert {str(r) for r in BODY_ROUTES} >= EXPECTED_BODY_ROUTES
    assert [str(r) for r in BODY_ROUTES if r.parses_body] == []


@pytest.mark.parametrize("route", BODY_ROUTES, ids=str)
@pytest.mark.parametrize(
    ("credential", "status", "code"),
    [({}, 401, "unauthorized"), ({"X-API-Key": "not-a-key"}, 403, "forbidden")],
    ids=["none", "wrong"],
)
def test_credentials_are_checked_before_a_single_body_byte_arrives(
    gateway: Gateway,
    route: BodyRoute,
    credential: dict[str, str],
    status: int,
    code: str,
) -> None:
    method, path = route.method, route.path.format(model=MODEL, name="p", version="1")
    declared = 500_000
    assert declared <= body_limit(gateway.settings, method, path)  # not the edge's 413 answering
    headers = {**credential, "Content-Type": "application/json", "Content-Length": str(declared)}
    with connect(gateway.port) as sock:
        start = time.perf_counter()
        sock.sendall(head(method, path, headers))  # and not one byte of the body
        response = read_response(sock)
        elapsed_s = time.perf_counter() - start
    assert assert_documented_error(response, status)["code"] == code
    assert elapsed_s < PROMPT_S, f"{method} {path} answered after {elapsed_s:.2f} s"


# ---------------------------------------------------------------- 3. numbers beyond float


def test_integer_beyond_float_range_is_refused_on_both_routes_and_the_connection_stays_usable(
    gateway: Gateway,
) -> None:
    row = [HUGE_INT, *[0] * (len(FEATURE_NAMES) - 1)]
    native = {"model": MODEL, "instances": [row]}
    v2 = {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    with connect(gateway.port) as sock:
        v2_path = f"/v2/models/{MODEL}/infer"  # the protocol's status for bad input: 400
        for path, doc, status in (("/predict", native, 422), (v2_path, v2, 400)):
            response = exchange(sock, json_request(path, doc, PREDICT_AUTH))
            error = assert_documented_error(response, status)
            assert "too large" in error["message"], error
            assert response.headers.get("connection") != "close"
        fine = exchange(
            sock, json_request("/predict", {"model": MODEL, "instances": [ROW]}, PREDICT_AUTH)
        )
    assert fine.status == 200, fine.body  # same socket: keep-alive survived both refusals


# ---------------------------------------------------------------- 4. names and stored records


@pytest.mark.parametrize("name", ["a:b", "a" * 65, "café"], ids=["colon", "65-chars", "non-ascii"])
async def test_upload_under_an_invalid_patch_name_is_a_4xx_with_a_reason(
    gateway: Gateway, name: str
) -> None:
    form = {"manifest": orjson.dumps({"kind": "custom", "model": MODEL}).decode()}
    files = {"artifact": ("p.onnx", b"not onnx", "application/octet-stream")}
    path = f"/patches/{urllib.parse.quote(name, safe=':')}/versions"
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.post(path, headers=ADMIN_AUTH, data=form, files=files)
    error = assert_documented_error(response, 422)
    assert "name" in error["message"] and "pattern" in error["message"], error


STACK_WITH_HUGE_ALPHA = {
    "model": MODEL,
    "revision": 1,
    "entries": [{"patch": "p", "version": 1, "alpha": 1e6}],
}


@pytest.mark.parametrize(
    ("record", "where"),
    [
        (orjson.dumps(STACK_WITH_HUGE_ALPHA), "entries.0.alpha"),
        (b"not json at all", "record"),
        (
            orjson.dumps({**STACK_WITH_HUGE_ALPHA, "entries": [{"patch": "a:b", "version": 1}]}),
            "entries.0.patch",
        ),
    ],
    ids=["alpha-1e6", "not-json", "bad-patch-name"],
)
async def test_invalid_stored_stack_is_a_409_that_says_what_is_wrong(
    gateway: Gateway, record: bytes, where: str
) -> None:
    key = RegistryKeys(gateway.settings.redis.key_prefix).stack(MODEL)
    gateway.redis.set(key, record)  # as someone with write access to Redis would
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.get(f"/models/{MODEL}/stack", headers=ADMIN_AUTH)
    finally:
        gateway.redis.delete(key)
    error = assert_documented_error(response, 409)
    assert error["code"] == "invalid_stored_record"
    assert where in error["message"] and "active stack" in error["message"], error


async def test_invalid_stack_history_entry_is_a_409_that_says_what_is_wrong(
    gateway: Gateway,
) -> None:
    key = RegistryKeys(gateway.settings.redis.key_prefix).stack_history(MODEL)
    gateway.redis.lpush(key, orjson.dumps({**STACK_WITH_HUGE_ALPHA, "revision": 0}))
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.get(f"/models/{MODEL}/stack/history", headers=ADMIN_AUTH)
    finally:
        gateway.redis.delete(key)
    error = assert_documented_error(response, 409)
    assert error["code"] == "invalid_stored_record"
    assert "history" in error["message"] and "alpha" in error["message"], error


async def test_redis_refusing_a_command_is_a_503_that_does_not_claim_an_outage(
    gateway: Gateway,
) -> None:
    key = RegistryKeys(gateway.settings.redis.key_prefix).stack(MODEL)
    gateway.redis.lpush(key, b"a list where a string belongs")  # GET answers WRONGTYPE
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            response = await client.get(f"/models/{MODEL}/stack", headers=ADMIN_AUTH)
    finally:
        gateway.redis.delete(key)
    error = assert_documented_error(response, 503)
    assert error["code"] == "redis_unavailable"
    assert "refused a command" in error["message"], error


async def test_history_limit_beyond_range_is_a_422(gateway: Gateway) -> None:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.get(
            f"/models/{MODEL}/stack/history", params={"limit": 2**64}, headers=ADMIN_AUTH
        )
    assert assert_documented_error(response, 422)["code"] == "invalid_request"


@pytest.mark.parametrize("value", ["1", True], ids=["numeric-string", "boolean"])
def test_numeric_strings_and_booleans_are_not_taken_for_numbers(
    gateway: Gateway, value: object
) -> None:
    row = [value, *ROW[1:]]
    v2 = {"inputs": [{"name": "x", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    with connect(gateway.port) as sock:
        native = exchange(
            sock, json_request("/predict", {"model": MODEL, "instances": [row]}, PREDICT_AUTH)
        )
        tensor = exchange(sock, json_request(f"/v2/models/{MODEL}/infer", v2, PREDICT_AUTH))
    assert assert_documented_error(native, 422)["code"] == "invalid_instances"
    assert assert_documented_error(tensor, 400)["code"] == "invalid_tensor"


# ---------------------------------------------------------------- 5. framework errors


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (request("GET", "/no/such/route"), 404, "not_found"),
        (request("GET", f"/v2/models/{MODEL}/nope", PREDICT_AUTH), 404, "not_found"),
        (request("GET", "/predict", PREDICT_AUTH), 405, "method_not_allowed"),
        (request("DELETE", f"/models/{MODEL}/stack", ADMIN_AUTH), 405, "method_not_allowed"),
        (
            request(
                "POST",
                "/patches/p/versions",
                {**ADMIN_AUTH, "Content-Type": "multipart/form-data"},  # no boundary
                b"--x\r\n\r\n",
            ),
            400,
            "bad_request",
        ),
        (
            request(
                "POST",
                "/patches/p/versions",
                {**ADMIN_AUTH, "Content-Type": "multipart/form-data; boundary=x"},
                b"--x\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--x--\r\n",
            ),
            400,
            "bad_request",
        ),
    ],
    ids=[
        "unknown-route",
        "unknown-v2-route",
        "wrong-method",
        "wrong-method-admin",
        "form-without-boundary",
        "form-part-without-name",
    ],
)
def test_framework_errors_use_the_documented_error_body(
    gateway: Gateway, raw: bytes, status: int, code: str
) -> None:
    with connect(gateway.port) as sock:
        response = exchange(sock, raw)
        assert assert_documented_error(response, status)["code"] == code
        assert exchange(sock, request("GET", "/v2/health/live")).status == 200


# ---------------------------------------------------------------- 6. strict booleans


@pytest.mark.parametrize("value", ["false", "true", 0])
def test_return_raw_that_is_not_a_json_boolean_is_a_422_naming_the_field(
    gateway: Gateway, value: object
) -> None:
    native = {"model": MODEL, "instances": [ROW], "return_raw": value}
    v2 = {
        "inputs": [{"name": "x", "shape": [1, len(ROW)], "datatype": "FP32", "data": ROW}],
        "parameters": {"return_raw": value},
    }
    with connect(gateway.port) as sock:
        first = exchange(sock, json_request("/predict", native, PREDICT_AUTH))
        second = exchange(sock, json_request(f"/v2/models/{MODEL}/infer", v2, PREDICT_AUTH))
    assert "body.return_raw" in assert_documented_error(first, 422)["message"]
    assert "body.parameters.return_raw" in assert_documented_error(second, 400)["message"]


# ---------------------------------------------------------------- 7. repeated 5xx throttled

REPEATS = re.compile(r"\((\d+) more like this in [\d.]+ s\)$")


def test_repeated_identical_5xx_are_logged_once_per_interval_with_a_count(
    key_prefix: str,
    redis_client: object,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    interval_s = 0.5
    monkeypatch.setattr(errors, "server_errors", ThrottledLog(errors.log, interval_s=interval_s))
    caplog.set_level(logging.WARNING, logger=errors.log.name)
    closed = f"http://127.0.0.1:{refused_port()}/v2/models/{MODEL}/infer"
    settings = make_settings(
        key_prefix, "", url=closed, retries=0, breaker_threshold=3, breaker_reset_s=0.2
    )
    n = 200
    with running_server(create_app(settings), **SERVE) as url, httpx.Client(base_url=url) as client:
        body = {"model": MODEL, "instances": [ROW]}
        statuses = {
            client.post("/predict", headers=PREDICT_AUTH, json=body).status_code for _ in range(n)
        }
        deadline = time.monotonic() + 5 * interval_s + 2  # the last counts flush on a timer
        while time.monotonic() < deadline and accounted(caplog) < n:
            time.sleep(0.05)
        lines = [r.getMessage() for r in caplog.records if r.name == errors.log.name]
    print(f"{n} failed requests, statuses {sorted(statuses)}: {len(lines)} warning lines")
    print("\n".join(lines))
    assert statuses <= {502, 503} and statuses
    assert len(lines) < n / 10
    assert any(REPEATS.search(line) for line in lines)
    assert accounted(caplog) == n  # every failure is in a line or a count, none twice


def accounted(caplog: pytest.LogCaptureFixture) -> int:
    """Failures the log reports: one per plain line, N per '(N more like this ...)' line."""
    total = 0
    for record in caplog.records:
        if record.name == errors.log.name:
            repeats = REPEATS.search(record.getMessage())
            total += int(repeats.group(1)) if repeats else 1
    return total


# ---------------------------------------------------------------- 8. bugs that escape


@pytest.fixture
def fresh_bug_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Other tests' bugs on the same route must not throttle this test's first traceback."""
    monkeypatch.setattr(edge, "bugs", ThrottledLog(edge.log))


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, also seeing uvicorn's own loggers (they do not propagate to the root)."""
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    uvicorn_log.removeHandler(caplog.handler)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info]


def raising(exc: Exception) -> Any:
    async def predict(*args: object, **kwargs: object) -> None:
        raise exc

    return predict


def test_escaped_bug_is_a_documented_500_logged_once_and_keep_alive_survives(
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
    fresh_bug_log: None,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(Dataplane, "predict", raising(RuntimeError("a bug")))
    predict = json_request("/predict", {"model": MODEL, "instances": [ROW]}, PREDICT_AUTH)
    with connect(gateway.port) as sock:
        failed = exchange(sock, predict)
        error = assert_documented_error(failed, 500)
        again = exchange(sock, predict)  # same socket: the connection was not reset
        live = exchange(sock, request("GET", "/v2/health/live"))
    assert error["code"] == "internal_error"
    assert "a bug" not in failed.body.decode()  # internals stay in the log
    assert failed.headers.get("connection") != "close"
    assert again.status == 500 and live.status == 200
    logged = tracebacks(all_logs)
    assert len(logged) == 1, [r.getMessage() for r in logged]  # not once per layer or request
    assert logged[0].name == edge.log.name
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError


def test_a_different_bug_on_the_same_route_gets_its_own_traceback(
    gateway: Gateway,
    monkeypatch: pytest.MonkeyPatch,
    fresh_bug_log: None,
    all_logs: pytest.LogCaptureFixture,
) -> None:
    predict = json_request("/predict", {"model": MODEL, "instances": [ROW]}, PREDICT_AUTH)
    with connect(gateway.port) as sock:
        for exc in (RuntimeError("one bug"), KeyError("another bug")):
            monkeypatch.setattr(Dataplane, "predict", raising(exc))
            assert exchange(sock, predict).status == 500
    logged = [r.exc_info[0] for r in tracebacks(all_logs) if r.exc_info]
    assert logged == [RuntimeError, KeyError]
