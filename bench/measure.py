"""Measuring compared targets fairly: same generator, warm first, then interleaved rounds.

Overheads are differences of percentiles, so both percentiles must come from the same
conditions. On a shared 2-core machine a slow minute would bias whichever target it hit;
interleaving (A B C, A B C, ...) spreads it over all of them, and the median over rounds keeps
one noisy round from deciding.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from bench.loadgen import Generate, Load

# merged loads by scenario key, and each scenario's per-round loads
Measured = tuple[dict[str, Load], dict[str, list[Load]]]


@dataclass(frozen=True)
class Scenario:
    """One target under one load: compared scenarios share the generator and the rounds."""

    key: str
    url: str
    body: bytes
    concurrency: int
    pid: int | None = None  # the target's process, whose CPU time per request is recorded
    headers: Mapping[str, str] | None = None  # on top of the bench's (e.g. a binary body's)


def merge_rounds(rounds: list[Load]) -> Load:
    """One scenario's rounds as one result: counts add up, percentiles are the median of the
    rounds' percentiles (robust to one round hit by a noisy neighbour)."""
    requests = sum(r.requests for r in rounds)
    return Load(
        requests=requests,
        duration_s=sum(r.duration_s for r in rounds),
        p50_ms=float(np.median([r.p50_ms for r in rounds])),
        p99_ms=float(np.median([r.p99_ms for r in rounds])),
        mean_ms=sum(r.mean_ms * r.requests for r in rounds) / max(requests, 1),
        errors=sum(r.errors for r in rounds),
        cpu_ms_per_request=_median_or_none([r.cpu_ms_per_request for r in rounds]),
    )


def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.median(known)) if known else None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time so far of ``pid`` and its living descendants: a gateway run with ``--workers
    2`` serves from two child processes, which its own counters never see."""
    from deploy.local.processes import descendants

    total = 0.0
    for p in (pid, *descendants(pid)):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += process_cpu_seconds(p)
    return total


@dataclass(frozen=True)
class Bench:
    """How every scenario is measured: one generator, one client identity, fixed durations."""

    generate: Generate
    headers: Mapping[str, str]
    seconds: float
    warm_s: float
    rounds: int

    def measure(self, scenarios: list[Scenario]) -> Measured:
        """Warm every target at its concurrency (connections, caches, ORT arenas), then run
        the interleaved rounds; returns merged loads and the per-round ones."""
        for s in scenarios:
            self.generate(s.url, s.body, self.headers_of(s), s.concurrency, self.warm_s)
        per_round: dict[str, list[Load]] = {s.key: [] for s in scenarios}
        for i in range(self.rounds):
            for s in scenarios:
                load = self.load(s, self.seconds / self.rounds)
                _print_round(s.key, i, self.rounds, load)
                per_round[s.key].append(load)
        return {k: merge_rounds(v) for k, v in per_round.items()}, per_round

    def headers_of(self, s: Scenario) -> dict[str, str]:
        """The bench's client identity plus the scenario's own headers (which win)."""
        return {**self.headers, **(s.headers or {})}

    def load(self, s: Scenario, seconds: float) -> Load:
        """One run of ``seconds``; a failed request means the numbers measure an error path.

        The target's CPU time per request (its process and its children's) is recorded too:
        at 32 clients a one-event-loop server is CPU-bound, so this is what its throughput is
        made of."""
        cpu_before = tree_cpu_seconds(s.pid) if s.pid else 0.0
        raw = self.generate(s.url, s.body, self.headers_of(s), s.concurrency, seconds)
        load = Load.from_raw(raw)
        if s.pid and load.requests:
            cpu_ms = (tree_cpu_seconds(s.pid) - cpu_before) * 1e3 / load.requests
            load = replace(load, cpu_ms_per_request=cpu_ms)
        if load.errors:
            raise RuntimeError(f"{s.key} ({s.url}): {load.errors} failed requests")
        return load


def _print_round(key: str, i: int, rounds: int, load: Load) -> None:
    print(
        f"  round {i + 1}/{rounds} {key:<20} p50 {load.p50_ms:7.2f} ms"
        f"  p99 {load.p99_ms:7.2f} ms  {load.rps:8.1f} req/s",
        flush=True,
    )
