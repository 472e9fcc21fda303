"""The black box crashes and comes back on the same port: how long after it is ready again does
each replica answer 200 (its circuit breaker closes on a trial call)?

While the stand-in is down and restarting, one thread per replica sends ``/predict`` every
~20 ms and one polls the stand-in's readiness at the same pace, so both moments are known to
within one poll. ``recovery_ms`` is the slowest replica's.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import orjson

from bench.common import MODEL
from bench.reliability.patches import Patches
from bench.reliability.system import System

POLL_S = 0.02
TIMEOUT_S = 60.0


@dataclass
class Watch:
    """First moments seen by the pollers, after ``since``."""

    since: float
    ready: float | None = None
    first_ok: dict[int, float] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)


def run(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    """``cfg``: down_s."""
    body = orjson.dumps({"model": MODEL, "instances": [rows[0].tolist()]})
    system.standin.kill()
    watch = Watch(since=time.monotonic())
    threads = [threading.Thread(target=_ready_poller, args=(system.standin_url, watch))]
    threads += [
        threading.Thread(target=_predict_poller, args=(system, i, body, watch))
        for i in range(len(system.gateways))
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(cfg["down_s"])
        restarted = time.monotonic()
        system.standin.start()
        deadline = time.monotonic() + TIMEOUT_S
        while len(watch.first_ok) < len(system.gateways) and time.monotonic() < deadline:
            time.sleep(POLL_S)
    finally:
        watch.stop.set()
        for t in threads:
            t.join(10)
    return _result(watch, restarted, len(system.gateways), cfg["down_s"])


def _ready_poller(standin_url: str, watch: Watch) -> None:
    with httpx.Client(timeout=1.0) as client:
        while not watch.stop.is_set() and watch.ready is None:
            try:
                if client.get(f"{standin_url}/v2/health/ready").status_code == 200:
                    watch.ready = time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(POLL_S)


def _predict_poller(system: System, replica: int, body: bytes, watch: Watch) -> None:
    headers = {**system.creds.predict_headers, "Content-Type": "application/json"}
    with httpx.Client(base_url=system.gateways[replica], headers=headers, timeout=10) as client:
        while not watch.stop.is_set() and replica not in watch.first_ok:
            try:
                status = client.post("/predict", content=body).status_code
            except httpx.HTTPError:
                status = 0
            now = time.monotonic()
            watch.statuses[status] += 1
            if status == 200 and watch.ready is not None:
                watch.first_ok[replica] = now
            time.sleep(POLL_S)


def _result(watch: Watch, restarted: float, replicas: int, down_s: float) -> dict[str, Any]:
    """Per replica: first 200 − stand-in ready (0 when the 200 came within the same poll)."""
    if watch.ready is None:
        return {"recovery_ms": None, "recovered_replicas": 0, "error": "stand-in never ready"}
    per = [max(0.0, (watch.first_ok[i] - watch.ready) * 1e3) if i in watch.first_ok else None
           for i in range(replicas)]  # fmt: skip
    done = [p for p in per if p is not None]
    return {
        "down_s": down_s,
        "standin_start_ms": round((watch.ready - restarted) * 1e3, 1),
        "recovery_ms": round(max(done), 1) if len(done) == replicas else None,
        "recovery_ms_per_replica": [None if p is None else round(p, 1) for p in per],
        "recovered_replicas": len(done),
        "statuses_while_polling": {str(k): v for k, v in sorted(watch.statuses.items())},
    }
