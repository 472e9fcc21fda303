"""Seeds → mean ± std per table row, the targets of the issue, and ``quality.json``.

Row keys are ``{variant}.{row}`` for the full calibration set and ``{variant}.small.{row}`` for
the small one, with ``row`` one of ``raw``, ``eraser`` (α = 1), ``eraser_tuned`` (the α the job
chose on calibration data) and the peers (``peer_decisions.PEERS``). Standard deviations are over
seeds (ddof = 1).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

ROWS = ("raw", "eraser", "eraser_tuned", "linearpost_blind", "linearpost_blind_relaxed",
        "fairlearn_to", "error_parity", "error_parity_relaxed")  # fmt: skip
METRICS = ("avg", "worst", "eo", "accuracy", "eod_fairlearn", "dpd_fairlearn", "eo_floor")

# The paper's own numbers (Table I(e) and Table II): avg-group, worst-group, EO bias.
PAPER: dict[str, dict[str, tuple[float, float, float]]] = {
    "compas": {
        "vanilla.raw": (62.35, 45.47, 19.45),
        "vanilla.eraser": (63.59, 58.43, 2.03),
        "unfair.raw": (61.38, 31.30, 38.07),
        "unfair.eraser": (62.92, 61.82, 2.01),
    },
    "cmnist": {
        "vanilla.raw": (77.90, 12.91, 14.46),
        "vanilla.eraser": (95.88, 76.35, 2.50),
        "unfair.raw": (73.65, 11.90, 18.65),
        "unfair.eraser": (94.86, 57.08, 3.20),
    },
}


def row_key(variant: str, calibration: str, row: str) -> str:
    return f"{variant}.{row}" if calibration == "full" else f"{variant}.small.{row}"


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{setting: {row_key: {metric: mean, metric_std: std, n, ...}}}``."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        for row, values in run["rows"].items():
            if row == "raw" and run["calibration"] != "full":
                continue  # the same deployed model: its raw row is the full run's
            if row == "candidate":
                continue  # served or not: only the gate's statistics use it (``gate_stats``)
            key = row_key(run["variant"], run["calibration"], row)
            grouped[run["setting"]][key].append(values | {"_run": run})
    return {
        setting: {key: _summary(key, rows[key]) for key in sorted(rows, key=_order)}
        for setting, rows in grouped.items()
    }


def _order(key: str) -> tuple[int, int, int]:
    """Vanilla before unfair, full calibration before small, then raw → Eraser → peer."""
    parts = key.split(".")
    return (("vanilla", "unfair").index(parts[0]), len(parts), ROWS.index(parts[-1]))


def _summary(key: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    for metric in METRICS:
        values = [s[metric] for s in samples if s.get(metric) is not None]
        if values:
            out[metric] = round(float(np.mean(values)), 2)
            out[f"{metric}_std"] = (
                round(float(np.std(values, ddof=1)), 2) if len(values) > 1 else 0.0
            )
    groups = sorted(samples[0]["groups"])
    out["groups"] = {g: round(float(np.mean([s["groups"][g] for s in samples])), 2) for g in groups}
    runs = [s["_run"] for s in samples]
    if key.endswith("eraser_tuned") or key.endswith(".eraser"):
        out["rejected_by_gate"] = sum(r["status"] != "validated" for r in runs)
    if key.endswith("eraser_tuned"):
        out["alpha"] = [r["alpha"] for r in runs]
    if any(s.get("needs_sensitive_attribute") for s in samples):
        out["needs_sensitive_attribute"] = True
    out["calibration_rows"] = runs[0]["calibration_rows"]
    return out


def targets(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The issue's targets, for the vanilla model with the α chosen on calibration data."""
    checks: dict[str, dict[str, Any]] = {}
    if "compas" in summary:
        raw, fair = summary["compas"]["vanilla.raw"], summary["compas"]["vanilla.eraser_tuned"]
        checks["compas"] = {
            "eo <= 3.0": check(fair["eo"], fair["eo"] <= 3.0),
            "worst >= 55": check(fair["worst"], fair["worst"] >= 55.0),
            "avg >= raw - 1.5": check(fair["avg"] - raw["avg"], fair["avg"] >= raw["avg"] - 1.5),
        }
    if "cmnist" in summary:
        fair = summary["cmnist"]["vanilla.eraser_tuned"]
        checks["cmnist"] = {
            "eo <= 3.0": check(fair["eo"], fair["eo"] <= 3.0),
            "worst >= 70": check(fair["worst"], fair["worst"] >= 70.0),
        }
    if "adult" in summary:
        raw, fair = summary["adult"]["vanilla.raw"], summary["adult"]["vanilla.eraser_tuned"]
        reduction = 100 * (1 - fair["eo"] / raw["eo"]) if raw["eo"] else 0.0
        checks["adult"] = {
            "eo reduced >= 70%": check(reduction, reduction >= 70.0),
            "avg >= raw": check(fair["avg"] - raw["avg"], fair["avg"] >= raw["avg"]),
        }
    return checks


def check(value: float, met: bool) -> dict[str, Any]:
    """A target's measured value and whether it was met (``_targets``, outer-CV targets)."""
    return {"value": round(float(value), 2), "met": bool(met)}


MAX_GROUPS_STORED = 8  # Colored MNIST's 100 group accuracies per row are plotted, not stored


def for_json(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The summary as ``quality.json`` keeps it: per-group accuracies only where they are few."""
    return {
        setting: {
            key: {m: v for m, v in row.items() if m != "groups" or len(v) <= MAX_GROUPS_STORED}
            for key, row in rows.items()
        }
        for setting, rows in summary.items()
    }
