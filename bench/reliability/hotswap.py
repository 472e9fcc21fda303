"""Hot-swaps under load: many stacks activated on one replica while every replica serves.

A quiet phase first (the same load, no swaps) gives the latency to compare with. Then each
revision is a random stack of one to three of our patches at random α, PUT on replica 0; its
convergence is the time from the PUT's answer until every replica reports serving it. Every
answer of both phases is checked against the stack of the revision it names.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.reliability.load import LoadGenerator, mismatches, summary, window
from bench.reliability.patches import Entry, Patches, wait_served
from bench.reliability.system import System

PATCHES = 6
PAUSE_S = 0.15  # between revisions: every revision also gets answered by the load


def run(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    """``cfg``: revisions, rate, quiet_s."""
    rng = random.Random(7)
    with system.admin() as admin:
        pool = [patches.register(admin, f"hs-{i}", seed=100 + i) for i in range(PATCHES)]
        first, _ = patches.put_stack(admin, [pool[0]])
    wait_served(system.gateways, system.creds.admin_headers, first)
    with LoadGenerator(system.gateways, system.creds.predict_headers, rows, cfg["rate"]) as load:
        time.sleep(cfg["quiet_s"])
        quiet_end = time.monotonic()
        convergence = _swaps(system, patches, pool, rng, cfg["revisions"])
        swaps_end = time.monotonic()
    quiet = window(load.samples, load.started, quiet_end)
    during = window(load.samples, quiet_end, swaps_end)
    wrong = mismatches(load.samples, rows, patches.ledger)
    return _result(quiet, during, load, quiet_end, swaps_end, convergence, wrong)


def _swaps(
    system: System, patches: Patches, pool: list[Entry], rng: random.Random, revisions: int
) -> list[float]:
    """Activate ``revisions`` random stacks one after another; each one's convergence (ms)."""
    out = []
    with system.admin() as admin:
        for _ in tqdm(range(revisions), desc="hot-swaps", unit="rev", leave=False):
            chosen = rng.sample(pool, rng.randint(1, 3))
            entries = [Entry(e.patch, e.version, rng.choice([0.25, 0.5, 1.0, 1.5, 2.0]), e.blob)
                       for e in chosen]  # fmt: skip
            revision, accepted = patches.put_stack(admin, entries)
            done = wait_served(system.gateways, system.creds.admin_headers, revision)
            out.append((done - accepted) * 1e3)
            time.sleep(PAUSE_S)
    return out


def _result(
    quiet: list, during: list, load: LoadGenerator, quiet_end: float, swaps_end: float,
    convergence: list[float], wrong: list[str],
) -> dict[str, Any]:  # fmt: skip
    q = summary(quiet, quiet_end - load.started)
    d = summary(during, swaps_end - quiet_end)
    every = summary(load.samples, load.stopped - load.started)
    conv = np.array(convergence)
    return {
        "revisions": len(convergence),
        "requests": every["requests"],
        "failed": every["failed"],
        "mismatched": len(wrong),
        "mismatch_examples": sorted(set(wrong))[:3],
        "convergence_p50_ms": round(float(np.percentile(conv, 50)), 1),
        "convergence_p99_ms": round(float(np.percentile(conv, 99)), 1),
        "convergence_max_ms": round(float(conv.max()), 1),
        "p99_ms_during_swaps": d["p99_ms"],
        "p99_ms_without": q["p99_ms"],
        "p50_ms_during_swaps": d["p50_ms"],
        "p50_ms_without": q["p50_ms"],
        "offered_rps": every["offered_rps"],
        "quiet_s": round(quiet_end - load.started, 1),
        "swaps_s": round(swaps_end - quiet_end, 1),
        "errors": every["errors"],
    }
