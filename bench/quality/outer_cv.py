"""The outer cross-validation protocol's figures: every row scored once per seed, then paired.

Each outer run (``protocol.evaluate_outer``) scores one fold's test rows with every method.
Here the folds of a seed are put back together, so each seed's metrics rest on the whole
dataset, and methods are compared *pairwise on the same rows*: a stratified paired bootstrap
resamples rows within each (target, bias) cell of each seed — every method's decision on a row
travels with it — and the seed-mean difference of a metric gets a basic bootstrap interval
(``patch_training.bootstrap``, the gate's own machinery). A comparison is "better" or "worse"
only when its interval excludes no difference; otherwise "not resolved".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

from bench.quality.metrics import eo_noise_floor, row_metrics
from patch_training.bootstrap import Cells, interval, metrics_of, resampled_accuracies
from service.jobs.spec import Interval

METRICS = {"avg": "avg_group_acc", "worst": "worst_group_acc", "eo": "eo_bias",
           "accuracy": "accuracy"}  # fmt: skip
HIGHER_IS_BETTER = {"avg": True, "worst": True, "eo": False, "accuracy": True}
DRAWS = 2000
CONFIDENCE = 0.9
SERVED = "eraser_tuned"  # what the gateway served after the gate (raw when it rejected)
CANDIDATE = "candidate"  # the job's patch, served or not: what the Eraser does, gate aside
COMPARED = ("raw", "fairlearn_to", "error_parity", "error_parity_relaxed", "linearpost_blind",
            "linearpost_blind_relaxed")  # fmt: skip


def outer_summary(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{setting: block}`` from the outer runs' records (one per setting × seed × fold)."""
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_setting[record["setting"]].append(record)
    return {setting: _block(runs) for setting, runs in by_setting.items()}


def pooled(runs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per seed: y, b and every method's decision on every row, in the pooled table's order.
    A row scored twice, or not at all, within a seed is an error in the protocol."""
    seeds: dict[int, dict[str, Any]] = {}
    for seed in sorted({r["seed"] for r in runs}):
        own = [r for r in runs if r["seed"] == seed]
        n = own[0]["pooled_rows"]
        order = np.concatenate([r["test_rows"] for r in own])
        if len(order) != n or len(np.unique(order)) != n:
            raise ValueError(f"seed {seed}: the folds do not score every row exactly once")
        at = np.argsort(order)
        methods = set.intersection(*(set(r["pred"]) for r in own))
        seeds[seed] = {
            "y": np.concatenate([r["y"] for r in own])[at],
            "b": np.concatenate([r["b"] for r in own])[at],
            "pred": {m: np.concatenate([r["pred"][m] for r in own])[at] for m in sorted(methods)},
            "validated": sum(r["status"] == "validated" for r in own),
            "folds": len(own),
        }
    return seeds


def _block(runs: list[dict[str, Any]]) -> dict[str, Any]:
    seeds = pooled(runs)
    methods = sorted(set.intersection(*(set(s["pred"]) for s in seeds.values())))
    per_seed = {
        m: [row_metrics(s["y"], s["pred"][m], s["b"]) for s in seeds.values()] for m in methods
    }
    first = next(iter(seeds.values()))
    floors = [eo_noise_floor(s["y"], s["pred"]["raw"], s["b"]) for s in seeds.values()]
    return {
        "folds": first["folds"],
        "seeds": list(seeds),
        "rows": len(first["y"]),
        "validated": {str(k): s["validated"] for k, s in seeds.items()},
        "eo_floor": round(float(np.mean(floors)), 2),
        "methods": {m: mean_over_seeds(rows, METRICS) for m, rows in per_seed.items()},
        "paired": {
            eraser: paired(seeds, eraser, [m for m in COMPARED if m in methods])
            for eraser in (SERVED, CANDIDATE)
            if eraser in methods
        },
    }


def mean_over_seeds(rows: list[dict[str, Any]], metrics: Iterable[str]) -> dict[str, Any]:
    """Each metric's mean over the seeds' rows, with every seed's value beside it."""
    out: dict[str, Any] = {}
    for metric in metrics:
        values = [float(r[metric]) for r in rows]
        out[metric] = round(float(np.mean(values)), 2)
        out[f"{metric}_seeds"] = [round(v, 2) for v in values]
    return out


def paired(
    seeds: dict[int, dict[str, Any]], eraser: str, others: list[str]
) -> dict[str, dict[str, Any]]:
    """``{other: {metric: {estimate, low, high, verdict}}}``: ``eraser`` minus ``other``, in
    points, averaged over seeds, with its paired bootstrap interval."""
    methods = [eraser, *others]
    point = {m: defaultdict(list) for m in methods}
    draws = {m: defaultdict(list) for m in methods}
    for seed, data in seeds.items():
        cells = Cells.of(data["y"], data["b"])
        correct = {m: data["pred"][m] == data["y"] for m in methods}
        resampled = resampled_accuracies(cells, correct, DRAWS, seed)
        for m in methods:
            observed = np.array([np.mean(correct[m][rows]) for rows in cells.members])
            for short, name in METRICS.items():
                point[m][short].append(float(metrics_of(observed, cells)[name]))
                draws[m][short].append(metrics_of(resampled[m], cells)[name])
    return {o: {m: _verdict(m, point, draws, eraser, o) for m in METRICS} for o in others}


def seed_mean_difference(point: dict, draws: dict, a: str, b: str, metric: str) -> Interval:
    """``a`` minus ``b`` on ``metric``, averaged over seeds (``point``: per-seed values;
    ``draws``: per-seed paired bootstrap draws), with its basic bootstrap interval."""
    estimate = float(np.mean(point[a][metric]) - np.mean(point[b][metric]))
    spread = np.mean(draws[a][metric], axis=0) - np.mean(draws[b][metric], axis=0)
    return interval(estimate, spread, CONFIDENCE, bounds=(-1, 1))


def _verdict(short: str, point: dict, draws: dict, eraser: str, other: str) -> dict[str, Any]:
    iv = seed_mean_difference(point, draws, eraser, other, short)
    verdict = "not resolved"
    if iv.low > 0 or iv.high < 0:  # the interval excludes "no difference"
        up = iv.estimate > 0
        verdict = "better" if up == HIGHER_IS_BETTER[short] else "worse"
    return {"estimate": iv.estimate, "low": iv.low, "high": iv.high, "verdict": verdict}
