"""``bench/results/reliability.json``: what each scenario measured, the targets judged from it
(``_targets``) and where and how it ran (``_meta``). Nothing here is typed by hand: a target's
value is read from the scenario's own record, and a scenario that did not run is "not measured".
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.local.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "reliability.json"

# (name, scenario, key, comparison, target): a scenario's own figure against its target.
TARGETS: tuple[tuple[str, str, str, str, float | bool], ...] = (
    ("hotswap_failed", "hotswap", "failed", "<=", 0),
    ("hotswap_mismatched", "hotswap", "mismatched", "<=", 0),
    ("hotswap_convergence_p99_ms", "hotswap", "convergence_p99_ms", "<=", 1000),
    ("redis_kill_failed", "redis_kill", "failed", "<=", 0),
    ("redis_kill_mismatched", "redis_kill", "mismatched", "<=", 0),
    ("redis_kill_served_last_verified", "redis_kill", "served_last_verified", "==", True),
    ("redis_hang_failed", "redis_hang", "failed", "<=", 0),
    ("redis_hang_mismatched", "redis_hang", "mismatched", "<=", 0),
    ("redis_hang_served_last_verified", "redis_hang", "served_last_verified", "==", True),
    ("redis_empty_restart_failed", "redis_empty_restart", "failed", "<=", 0),
    ("redis_empty_restart_mismatched", "redis_empty_restart", "mismatched", "<=", 0),
    ("redis_empty_restart_kept_old", "redis_empty_restart", "served_last_verified", "==", True),
    ("upstream_recovery_ms", "upstream_restart", "recovery_ms", "<=", 1500),
    ("tamper_served_tampered", "tamper", "served_tampered", "<=", 0),
    ("tamper_uncounted", "tamper", "uncounted", "<=", 0),
    ("poisoned_cache_versions", "poisoned_cache", "versions_from_poisoned_cache", "<=", 0),
    ("body_bomb_rss_growth_mb", "body_bombs", "max_rss_growth_mb", "<=", 20),
    ("body_bomb_not_4xx", "body_bombs", "not_4xx_count", "<=", 0),
    ("fuzz_server_errors", "fuzz", "server_errors", "<=", 0),
)


def judge(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every target with its measured value and ``met`` (None: the scenario did not measure
    it — it did not run, or it failed before it could)."""
    out = {}
    for name, scenario, key, op, target in TARGETS:
        value = res.get(scenario, {}).get(key)
        met = None if value is None else (value <= target if op == "<=" else value == target)
        out[name] = {"scenario": scenario, "key": key, "op": op, "target": target,
                     "value": value, "met": met}  # fmt: skip
    return out


def meta(mode: str, durations: dict[str, float], argv: list[str]) -> dict[str, Any]:
    """Where and how: machine, date, per-scenario wall time, the code's revision."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "argv": argv,
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "redis_server": _redis_version(),
        "git_revision": _git_revision(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "durations_s": {k: round(v, 1) for k, v in durations.items()},
        "total_s": round(sum(durations.values()), 1),
    }


def write(path: Path, result: dict[str, Any], merge: bool) -> dict[str, Any]:
    """Write ``result`` (merged over what ``path`` holds when ``merge``: ``--only`` re-measures
    some scenarios); the targets are judged on the merged whole."""
    old = json.loads(path.read_text()) if merge and path.exists() else {}
    if merge and "_meta" in old:
        durations = old["_meta"].get("durations_s", {}) | result["_meta"]["durations_s"]
        result["_meta"] |= {"durations_s": durations, "total_s": round(sum(durations.values()), 1)}
    merged = old | result
    merged["_targets"] = judge(merged)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=2, sort_keys=False) + "\n")
    return merged


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        return out.stdout.split()[2].removeprefix("v=") if out.returncode == 0 else "unknown"
    except (OSError, IndexError):
        return "unknown"


def _git_revision() -> str | None:
    """Read-only: the checkout's HEAD, for the JSON (never rendered into BENCHMARKS.md)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=5)  # fmt: skip
        return out.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
