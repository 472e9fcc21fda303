"""Open-loop load on every replica while a fault happens: requests go out at a fixed rate
whatever the answers do, so a stalled replica shows as latency and failures, not as a generator
that politely slowed down (``bench.loadgen`` is closed-loop, right for throughput, wrong here).

The generator runs its own event loop in a thread of the benchmark's process; it keeps every
answer so that each can be checked afterwards against the stack of the revision it names.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

from bench.common import MODEL

TICK_S = 0.005
MAX_IN_FLIGHT = 512  # beyond this the generator waits: a bound on its own memory, not a pace


@dataclass(frozen=True)
class Sample:
    """One request: when it left, how long it took, what came back (``answer`` on 200)."""

    sent: float
    latency_ms: float
    status: int  # 0: no HTTP answer (connection refused, reset, timeout)
    replica: int
    row: int
    answer: dict[str, Any] | None
    error: str = ""


@dataclass
class LoadGenerator:
    """``rate`` requests per second, round-robin over ``urls``, one instance each, with
    ``return_raw`` so every answer can be checked."""

    urls: list[str]
    headers: dict[str, str]
    rows: np.ndarray
    rate: float = 200.0
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    stopped: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _bodies: list[bytes] = field(default_factory=list)

    def __enter__(self) -> LoadGenerator:
        self._bodies = [
            orjson.dumps({"model": MODEL, "instances": [row.tolist()], "return_raw": True})
            for row in self.rows
        ]
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped = time.monotonic()  # the end of sending; in-flight answers still count
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        headers = {**self.headers, "Content-Type": "application/json"}
        clients = [
            httpx.AsyncClient(base_url=u, headers=headers, limits=limits, timeout=10.0)
            for u in self.urls
        ]
        in_flight: set[asyncio.Task[None]] = set()
        sent, start = 0, time.monotonic()
        try:
            while not self._stop.is_set():
                due = int((time.monotonic() - start) * self.rate) - sent
                for _ in range(max(0, min(due, MAX_IN_FLIGHT - len(in_flight)))):
                    task = asyncio.create_task(self._one(clients, sent))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    sent += 1
                await asyncio.sleep(TICK_S)
            if in_flight:
                await asyncio.wait(in_flight, timeout=15)
        finally:
            for client in clients:
                await client.aclose()

    async def _one(self, clients: list[httpx.AsyncClient], n: int) -> None:
        replica, row = n % len(clients), n % len(self._bodies)
        sent = time.monotonic()
        try:
            r = await clients[replica].post("/predict", content=self._bodies[row])
            answer = orjson.loads(r.content) if r.status_code == 200 else None
            error = "" if r.status_code == 200 else r.text[:200]
            status = r.status_code
        except httpx.HTTPError as exc:
            answer, error, status = None, f"{type(exc).__name__}: {exc}", 0
        latency = (time.monotonic() - sent) * 1e3
        self.samples.append(Sample(sent, latency, status, replica, row, answer, error))


def window(samples: list[Sample], start: float, end: float) -> list[Sample]:
    """Requests sent in [start, end)."""
    return [s for s in samples if start <= s.sent < end]


def summary(samples: list[Sample], seconds: float) -> dict[str, Any]:
    """Counts and percentiles of one phase; ``errors`` shows up to three distinct failures."""
    latencies = np.array([s.latency_ms for s in samples]) if samples else np.zeros(1)
    failed = [s for s in samples if s.status != 200]
    kinds = sorted({f"{s.status} {s.error[:120]}" for s in failed})
    return {
        "requests": len(samples),
        "failed": len(failed),
        "offered_rps": round(len(samples) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "errors": kinds[:3],
    }


def mismatches(samples: list[Sample], rows: np.ndarray, ledger: Any) -> list[str]:
    """What is wrong with each 200 answer that is not what its revision must give."""
    wrong = []
    for s in samples:
        if s.answer is not None and (why := ledger.check(s.answer, rows[s.row : s.row + 1])):
            wrong.append(why)
    return wrong
