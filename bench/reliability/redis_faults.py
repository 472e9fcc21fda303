"""Redis fails under load: killed and restarted with its append-only file, hung (SIGSTOP) and
resumed, or killed and restarted empty.

Serving must not notice — replicas answer from the stack they loaded — and afterwards every
replica must still serve the last verified revision (after the empty restart: the old one, not
the registry's revision 0) and pick up the next stack change. After the empty restart the change
follows docs/operations.md: re-register the versions, PUT with ``revision_floor`` = served + 1.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import numpy as np

from bench.common import MODEL
from bench.reliability import observe
from bench.reliability.load import LoadGenerator, mismatches, summary
from bench.reliability.patches import (
    Entry,
    Patches,
    PutFailed,
    served_revisions,
    wait_served,
)
from bench.reliability.system import System, wait_until

LEAD_S = 1.0  # load before the fault
TAIL_S = 2.0  # load after the registry answers again
PUT_TRIES = 20


def run_kill(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    return _scenario(system, patches, rows, cfg, "kill")


def run_hang(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    return _scenario(system, patches, rows, cfg, "hang")


def run_empty(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    return _scenario(system, patches, rows, cfg, "empty")


def _scenario(
    system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any], kind: str
) -> dict[str, Any]:
    """``cfg``: rate, fault_s."""
    with system.admin() as admin:
        pool = [patches.register(admin, f"rf-{kind}-{i}", seed=200 + i) for i in range(2)]
        before, _ = patches.put_stack(admin, [pool[0]])
    wait_served(system.gateways, system.creds.admin_headers, before)
    with LoadGenerator(system.gateways, system.creds.predict_headers, rows, cfg["rate"]) as load:
        time.sleep(LEAD_S)
        outage, restored = _fault(system, kind, cfg["fault_s"])
        back = _registry_back(system)
        time.sleep(TAIL_S)
    served_after = served_revisions(system.gateways, system.creds.admin_headers)
    signals = {"registry_behind": observe.registry_behind(system.gateways),
               "ready_problems": observe.ready_problems(system.gateways)}  # fmt: skip
    pickup = _pickup(system, patches, pool, kind, served_after)
    every = summary(load.samples, load.stopped - load.started)
    wrong = mismatches(load.samples, rows, patches.ledger)
    revisions = sorted({s.answer["revision"] for s in load.samples if s.answer})
    return {
        "fault_s": round(outage, 2),
        "registry_back_after_ms": round((back - restored) * 1e3, 1),
        "requests": every["requests"],
        "failed": every["failed"],
        "mismatched": len(wrong),
        "offered_rps": every["offered_rps"],
        "p99_ms": every["p99_ms"],
        "served_revision_before": before,
        "served_revision_after": served_after,
        "served_last_verified": all(r == before for r in served_after),
        "revisions_answered": revisions,
        **signals,
        **pickup,
        "errors": every["errors"],
    }


def _fault(system: System, kind: str, fault_s: float) -> tuple[float, float]:
    """Break Redis for ``fault_s``; how long it was out (s) and when it answered again."""
    start = time.monotonic()
    if kind == "hang":
        system.redis.signal(signal.SIGSTOP)
        time.sleep(fault_s)
        system.redis.signal(signal.SIGCONT)
        return time.monotonic() - start, time.monotonic()
    system.redis.kill()
    if kind == "empty":
        system.redis.wipe()
    time.sleep(fault_s)
    answered = system.redis.start()
    return answered - start, answered


def _registry_back(system: System, timeout_s: float = 60.0) -> float:
    """Every replica answers its stack route again (its Redis connections recovered)."""

    def answer() -> bool:
        try:
            codes = [httpx.get(f"{u}/models/{MODEL}/stack", headers=system.creds.admin_headers,
                               timeout=2).status_code for u in system.gateways]  # fmt: skip
        except httpx.HTTPError:
            return False
        return all(c == 200 for c in codes)

    return wait_until(answer, timeout_s, "replicas reading the registry again", poll_s=0.1)


def _pickup(
    system: System, patches: Patches, pool: list[Entry], kind: str, served: list[int | None]
) -> dict[str, Any]:
    """The next stack change after recovery: PUT accepted → every replica serving it. A PUT
    answered 503 (the replica's pooled Redis connections from before the fault) is sent again
    and counted: an operator would see those 503s."""
    refused: list[str] = []
    with system.admin() as admin:
        floor = None
        if kind == "empty":  # docs/operations.md, "Redis lost its data", step 3
            pool = [patches.register(admin, e.patch, seed=200 + i) for i, e in enumerate(pool)]
            floor = max(r for r in served if r is not None) + 1
        for _ in range(PUT_TRIES):
            try:
                revision, accepted = patches.put_stack(
                    admin, [pool[1]], floor=floor, expected=0 if kind == "empty" else None
                )
                break
            except PutFailed as exc:
                if exc.status != 503:
                    raise
                refused.append(exc.text[:160])
                time.sleep(0.1)
        else:
            raise RuntimeError(f"PUT refused {PUT_TRIES} times after recovery: {refused[-1]}")
    done = wait_served(system.gateways, system.creds.admin_headers, revision)
    return {
        "pickup_revision": revision,
        "pickup_ms": round((done - accepted) * 1e3, 1),
        "admin_503_after_recovery": len(refused),
        "admin_503_examples": sorted(set(refused))[:2],
    }
