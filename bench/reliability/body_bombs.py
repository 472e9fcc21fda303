"""100 MB bodies to every POST and PUT route of one replica, declared (``Content-Length``) and
undeclared (chunked), with the right credentials, so only the size limits stand in the way.

Sent over a raw socket: an HTTP client would insist on writing the whole body before reading an
answer, while the gateway is meant to answer 413 long before (at once for a declared length).
A reader thread timestamps the first byte of the answer; a sampler thread reads the gateway
process tree's RSS (the upload checker is a child process) every 10 ms.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
import psutil

from bench.common import MODEL
from bench.reliability.patches import Patches, manifest
from bench.reliability.system import System
from service.api.edge import MB, body_limit
from service.settings import GatewaySettings

BODY = 100 * MB
CHUNK = MB
BOUNDARY = "reliability-bomb"
VICTIM = -1  # the last replica: no other scenario is using it at the time


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    auth: str  # predict or admin


@dataclass
class Shot:
    """One bomb: what came back, when, and the RSS samples while it flew."""

    status: int = 0
    first_byte: float | None = None
    rss: list[int] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


def run(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    url = system.gateways[VICTIM]
    proc = psutil.Process(system.gateway_pids[VICTIM])
    settings = GatewaySettings(_env_file=None)
    results = []
    for route in routes(url):
        for chunked in (False, True):
            results.append(_bomb(system, url, proc, route, chunked, settings))
    over = [r for r in results if r["over_limit"]]
    not_4xx = [f"{r['method']} {r['path']} {r['mode']}: {r['status']}"
               for r in results if not 400 <= r["status"] < 500]  # fmt: skip
    return {
        "body_mb": BODY // MB,
        "cases": results,
        "max_rss_growth_mb": max(r["rss_growth_mb"] for r in over) if over else None,
        "max_rss_growth_mb_all": max(r["rss_growth_mb"] for r in results),
        "max_time_to_4xx_ms": max(r["time_to_answer_ms"] for r in results),
        "not_4xx": not_4xx,
        "not_4xx_count": len(not_4xx),
    }


def routes(url: str) -> list[Route]:
    """Every POST and PUT operation in the replica's own OpenAPI document."""
    schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    out = []
    for path, ops in schema["paths"].items():
        for method in ("post", "put"):
            if method in ops:
                concrete = path.replace("{model}", MODEL).replace("{name}", "bomb")
                auth = "predict" if "predict" in path or path.endswith("/infer") else "admin"
                out.append(Route(method.upper(), concrete, auth))
    return out


def _bomb(
    system: System, url: str, proc: psutil.Process, route: Route, chunked: bool,
    settings: GatewaySettings,
) -> dict[str, Any]:  # fmt: skip
    key = system.creds.predict if route.auth == "predict" else system.creds.admin
    head, tail, ctype = _framing(route)
    baseline = _rss(proc)
    shot = Shot()
    sampler = threading.Thread(target=_sample, args=(proc, shot), daemon=True)
    sampler.start()
    start = time.monotonic()
    _send(url, route, key, ctype, head, tail, chunked, shot)
    shot.done.set()
    sampler.join(5)
    limit = body_limit(settings, route.method, route.path)
    answered = shot.first_byte if shot.first_byte is not None else time.monotonic()
    return {
        "method": route.method,
        "path": route.path,
        "mode": "chunked" if chunked else "content-length",
        "status": shot.status,
        "limit_mb": round(limit / MB, 1),
        "over_limit": limit < BODY,
        "time_to_answer_ms": round((answered - start) * 1e3, 1),
        "rss_growth_mb": round(max(0, max(shot.rss or [baseline]) - baseline) / MB, 1),
    }


def _framing(route: Route) -> tuple[bytes, bytes, str]:
    """What goes before and after the filler: a multipart file part for the upload routes (the
    big part is the file, as an attacker would send it), JSON-looking bytes for the others."""
    if route.path == "/patches" or route.path.endswith("/versions"):
        field_name, file_name = ("spec", "calibration") if route.path == "/patches" else (
            "manifest", "artifact")  # fmt: skip
        text = orjson.dumps(manifest()).decode()
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field_name}"\r\n\r\n'
            f"{text}\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="{file_name}"; filename="bomb.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        return head.encode(), f"\r\n--{BOUNDARY}--\r\n".encode(), (
            f"multipart/form-data; boundary={BOUNDARY}")  # fmt: skip
    return b'{"model": "' + MODEL.encode() + b'", "instances": [', b"]}", "application/json"


def _send(
    url: str, route: Route, key: str, ctype: str, head: bytes, tail: bytes, chunked: bool,
    shot: Shot,
) -> None:  # fmt: skip
    """Stream the body until all of it is sent or the gateway answered (or hung up)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    reader = threading.Thread(target=_read_status, args=(sock, shot), daemon=True)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY}"
    request = (
        f"{route.method} {route.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: {ctype}\r\n{length}\r\n\r\n"
    )
    try:
        sock.sendall(request.encode())
        reader.start()
        filler = BODY - len(head) - len(tail)
        pieces = [head, *([b"0" * CHUNK] * (filler // CHUNK)), b"0" * (filler % CHUNK), tail]
        for piece in pieces:
            if shot.first_byte is not None:
                break
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
        if chunked and shot.first_byte is None:
            sock.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # the gateway closed the connection: its answer is what the reader got
    reader.join(60)
    sock.close()


def _read_status(sock: socket.socket, shot: Shot) -> None:
    try:
        data = sock.recv(4096)
    except OSError:
        return
    shot.first_byte = time.monotonic()
    line = data.split(b"\r\n", 1)[0].split()
    shot.status = int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def _rss(proc: psutil.Process) -> int:
    """The process and its children (the upload checker), in bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def _sample(proc: psutil.Process, shot: Shot) -> None:
    while not shot.done.is_set():
        shot.rss.append(_rss(proc))
        time.sleep(0.01)
    shot.rss.append(_rss(proc))
