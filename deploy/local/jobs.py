"""Following a training job from outside, as an operator's script does (demo, benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

FAILED_STATES = ("failed", "stopped", "canceled")


def wait_for_job(
    fetch: Callable[[], dict[str, Any]],
    timeout_s: float = 300,
    poll_s: float = 0.3,
    on_stage: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll ``fetch`` (a ``GET /jobs/{id}`` body) until the job finished; raise with the job's
    own reason if it failed, or after ``timeout_s``. ``on_stage`` sees each new stage once."""
    deadline, shown = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        job = fetch()
        stage = (job.get("progress") or {}).get("stage")
        if on_stage is not None and stage != shown:
            on_stage(job)
            shown = stage
        if job["state"] == "finished":
            return job
        if job["state"] in FAILED_STATES:
            raise RuntimeError(f"training job {job['state']}: {job['error']}")
        time.sleep(poll_s)
    raise TimeoutError(f"training job not finished after {timeout_s} s")


def wait_until_served(
    served_revision: Callable[[], int | None], revision: int, timeout_s: float, what: str
) -> None:
    """Activation is asynchronous: the gateway hot-loads a new stack on its own schedule, so
    poll ``served_revision`` (from ``GET /models/{m}/stack``) until it reaches ``revision``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if served_revision() == revision:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: stack revision {revision} not served after {timeout_s} s")
