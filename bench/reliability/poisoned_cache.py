"""A poisoned black-box cache: a training job fills the cache, someone rewrites the cached
answers in Redis (valid npy of other numbers, the entry's MAC left in place), the same job runs
again. A version trained on the rewritten answers would be signed and registered like any other,
so the count that matters is ``versions_from_poisoned_cache``: versions the second job registered
while its result says its black-box answers came from the cache.
"""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import numpy as np
import orjson

from bench.common import MODEL
from bench.reliability.patches import Patches
from bench.reliability.system import System
from blackbox.data import BIAS, TARGET, compas_calibration_csv, compas_split, load_compas
from deploy.local.jobs import wait_for_job
from service.registry.keys import RegistryKeys

NPY_MAGIC = b"\x93NUMPY"
# Small and quick: the scenario is about where the answers come from, not the patch's quality.
SPEC = {"model": MODEL, "target": TARGET, "bias": [BIAS], "name": "poisoned-cache",
        "epochs": 15, "patience": 5, "folds": 2, "hidden": [16],
        "alpha_grid": [0.0, 0.5, 1.0], "gate": {"bootstrap_draws": 200}}  # fmt: skip


def run(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    started = time.monotonic()
    system.ensure_worker()
    worker_s = time.monotonic() - started
    data = load_compas()
    csv = compas_calibration_csv(data, compas_split(data, seed=0).calib[: cfg["rows"]])
    try:
        with system.admin(timeout=60) as admin:
            first = _job(admin, csv)
            poisoned = _poison(system)
            second = _job(admin, csv)
            replaced = _entries_replaced(system, poisoned)
    finally:
        if system.worker is not None:  # PyTorch's process: not needed by later scenarios
            system.worker.stop()
            system.worker = None
    return _result(first, second, poisoned, replaced, worker_s, cfg["rows"])


def _job(admin: httpx.Client, csv: bytes) -> dict[str, Any]:
    """Upload the calibration set with ``SPEC`` and wait for the job's result."""
    r = admin.post(
        "/patches",
        data={"spec": orjson.dumps(SPEC).decode()},
        files={"calibration": ("calibration.csv", csv, "text/csv")},
    )
    if r.status_code != 202:
        raise RuntimeError(f"POST /patches: {r.status_code} {r.text[:300]}")
    url = r.json()["status_url"]
    return wait_for_job(lambda: admin.get(url).json(), timeout_s=240)["result"]


def _poison(system: System) -> dict[bytes, bytes]:
    """Rewrite every cached answer: the same prefix (format marker and MAC, if any), then a
    valid npy of the same shape whose classes are swapped. Returns key → what was written."""
    client = system.redis.client()
    pattern = RegistryKeys(system.prefix).blackbox_cache("*")
    written = {}
    for key in client.scan_iter(match=pattern):
        raw = client.get(key)
        at = raw.find(NPY_MAGIC)
        if at < 0:
            continue
        log_p = np.load(io.BytesIO(raw[at:]), allow_pickle=False)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(log_p[:, ::-1]), allow_pickle=False)
        written[key] = raw[:at] + buf.getvalue()
        client.set(key, written[key], keepttl=True)
    client.close()
    return written


def _entries_replaced(system: System, poisoned: dict[bytes, bytes]) -> int:
    """How many rewritten entries the second job replaced (it re-queried the black box)."""
    client = system.redis.client()
    try:
        return sum(client.get(key) != value for key, value in poisoned.items())
    finally:
        client.close()


def _result(
    first: dict[str, Any], second: dict[str, Any], poisoned: dict[bytes, bytes],
    replaced: int, worker_s: float, rows: int,
) -> dict[str, Any]:  # fmt: skip
    used = bool(second.get("cached_outputs"))
    versions = [f"{p['name']} v{p['version']}" for p in second.get("patches", [])]
    return {
        "rows": rows,
        "entries_poisoned": len(poisoned),
        "first_job_cached_outputs": bool(first.get("cached_outputs")),
        "second_job_cached_outputs": used,
        "cache_entry_refused": second.get("cache_entry_refused"),
        "entries_replaced": replaced,
        "versions_registered": versions,
        "versions_from_poisoned_cache": len(versions) if used else 0,
        "worker_start_s": round(worker_s, 1),
        "job_s": [round(sum(j.get("timings_s", {}).values()), 1) for j in (first, second)],
    }
