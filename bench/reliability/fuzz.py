"""Schemathesis against one replica's ``/openapi.json``: any 5xx is a bug (bad input must be a
4xx that says what is wrong, docs/api.md).

Two runs, so each operation is fuzzed with the credential it takes: the prediction key for
``/predict`` and ``/v2/models/…``, the admin key for everything else (a wrong key would only
test the 403). The CLI runs in a subprocess with a fixed seed; its HAR report holds every
request it sent, so ``cases`` and ``server_errors`` are counted from the wire, and its JSON
report names the operations that failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from bench.reliability.patches import Patches
from bench.reliability.system import System

PREDICT_PATHS = r"^/(predict|v2/models/)"
OPERATIONS = 18  # roughly: the examples per operation are sized from the cases wanted


def run(system: System, patches: Patches, rows: np.ndarray, cfg: dict[str, Any]) -> dict:
    """``cfg``: cases (the number wanted; the CLI's phases add their own on top)."""
    per_operation = max(1, cfg["cases"] // OPERATIONS)
    url = system.gateways[0]
    runs = {
        "predict": _st(system, url, system.creds.predict, per_operation, include=True),
        "admin": _st(system, url, system.creds.admin, per_operation, include=False),
    }
    return {
        "cases": sum(r["cases"] for r in runs.values()),
        "server_errors": sum(r["server_errors"] for r in runs.values()),
        "max_examples_per_operation": per_operation,
        "runs": runs,
    }


def _st(system: System, url: str, key: str, examples: int, include: bool) -> dict[str, Any]:
    """One ``st run``; requests and 5xx counted from its HAR file."""
    report = system.workdir / f"fuzz-{'predict' if include else 'admin'}"
    report.mkdir(exist_ok=True)
    har, summary = report / "requests.har", report / "summary.json"
    path_filter = "--include-path-regex" if include else "--exclude-path-regex"
    cmd = [str(Path(sys.executable).with_name("st")), "run", f"{url}/openapi.json",
           "-H", f"Authorization: Bearer {key}", "-n", str(examples), "--seed", "1",
           "--checks", "not_a_server_error", "--phases", "examples,coverage,fuzzing",
           "--workers", "1", "--generation-database", "none", "--suppress-health-check", "all",
           "--request-timeout", "30", "--no-color", path_filter, PREDICT_PATHS,
           "--report", "har,json", "--report-har-path", str(har),
           "--report-json-path", str(summary)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = [e["response"]["status"] for e in entries]
    doc = json.loads(summary.read_text())
    errors = sorted({f"{e['request']['method']} {urlsplit(e['request']['url']).path[:60]} → "
                     f"{e['response']['status']}" for e in entries
                     if e["response"]["status"] >= 500})  # fmt: skip
    return {
        "cases": len(statuses),
        "generated": doc["test_cases"]["generated"],
        "server_errors": sum(s >= 500 for s in statuses),
        "server_error_examples": errors[:5],
        "operations": doc["operations"]["tested"],
        "failures": [f"{f['title']}: {', '.join(f['operations'])}" for f in doc["failures"]],
        "exit_code": out.returncode,
        "seconds": round(doc["running_time"], 1),
    }
