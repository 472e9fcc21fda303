"""What the replicas say about themselves: Prometheus samples and readiness detail.

Scenarios read these the way an operator's alerting would, over HTTP, so that "counted" means
an alert would have fired, not that some internal counter moved.
"""

from __future__ import annotations

import re

import httpx

from bench.common import MODEL

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples on ``url``/metrics whose labels include ``labels``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match["value"])
    return total


def hotload_failures(urls: list[str]) -> float:
    """``eraser_hotload_total{outcome="failure"}`` summed over the replicas (the alert's input)."""
    return sum(metric(u, "eraser_hotload_total", model=MODEL, outcome="failure") for u in urls)


def registry_behind(urls: list[str]) -> int:
    """How many replicas raise ``eraser_registry_behind`` (registry revision below served)."""
    return sum(metric(u, "eraser_registry_behind", model=MODEL) > 0 for u in urls)


def ready_problems(urls: list[str]) -> int:
    """How many replicas list the model under ``problems`` in ``/v2/health/ready``."""
    count = 0
    for url in urls:
        body = httpx.get(f"{url}/v2/health/ready", timeout=10).json()
        count += MODEL in (body.get("problems") or {})
    return count
