"""BENCHMARKS.md's outer cross-validation part: per tabular setting, every method over the whole
dataset (mean over seeds, each seed's value beside it), the EO noise floor of both protocols,
the paired comparisons of the served Eraser with every other method, and the issue's targets."""

from __future__ import annotations

from typing import Any

from bench.quality.outer_cv import METRICS, SERVED
from bench.quality.results import check

NAMES = {"avg": "avg-group", "worst": "worst-group", "eo": "EO bias", "accuracy": "accuracy"}


def outer_section(
    outer: dict[str, Any] | None, titles: dict[str, str], labels: dict[str, str],
    fixed_floors: dict[str, float | None],
) -> list[str]:  # fmt: skip
    if not outer:
        return []
    lines = [
        "### Outer cross-validation (tabular settings)",
        "",
        "Every row of the dataset is a test row once per seed: the rows are dealt into folds "
        "(stratified by target and bias); for each fold a deployed model is trained on 5/6 of "
        "the other folds, a calibration job runs on the remaining 1/6, and every method scores "
        "the fold (vanilla deployed model, α chosen by the job, the gate's verdict applied). "
        "Figures are over the whole dataset, means over seeds. Paired comparisons: the Eraser "
        "minus the other method, in points, on the same rows, with a 90 % interval from a "
        "paired bootstrap within (target, bias) cells; *better* / *worse* only where the "
        "interval excludes no difference. Two Eraser rows: what the gateway served (the raw "
        "model wherever the gate rejected the fold's patch) and the job's patch itself, served "
        "or not (replayed from its registered artifact). The targets are the served one's.",
        "",
    ]
    for setting, block in outer.items():
        lines += _setting(titles.get(setting, setting), block, labels, fixed_floors.get(setting))
        lines += _targets(setting, block)
    return lines


def _setting(
    title: str, block: dict[str, Any], labels: dict[str, str], fixed_floor: float | None
) -> list[str]:
    validated = ", ".join(f"seed {s}: {n}/{block['folds']}" for s, n in block["validated"].items())
    floor = f"; fixed-split test set: {fixed_floor:.2f}" if fixed_floor is not None else ""
    lines = [
        f"#### {title}: {block['rows']} rows, {block['folds']} folds × seeds "
        f"{', '.join(map(str, block['seeds']))}",
        "",
        f"EO noise floor of the pooled rows: {block['eo_floor']:.2f}{floor}. Patches validated "
        f"by the gate: {validated}.",
        "",
        "| method | " + " | ".join(NAMES[m] for m in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for method, row in block["methods"].items():
        cells = [f"{row[m]:.2f} ({' / '.join(f'{v:.2f}' for v in row[f'{m}_seeds'])})"
                 for m in METRICS]  # fmt: skip
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |")
    for eraser, compared in block["paired"].items():
        lines += ["", f"{labels.get(eraser, eraser)} minus … (points, 90 % paired interval):",
                  "", "| compared with | " + " | ".join(NAMES[m] for m in METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]  # fmt: skip
        for other, by_metric in compared.items():
            cells = [_paired(by_metric[m]) for m in METRICS]
            lines.append(f"| {labels.get(other, other)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _paired(p: dict[str, Any]) -> str:
    return f"{p['estimate']:+.2f} [{p['low']:+.2f}, {p['high']:+.2f}] {p['verdict']}"


def outer_targets(setting: str, block: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's outer-CV targets, from the pooled figures and the paired comparisons."""
    fair, raw = block["methods"][SERVED], block["methods"]["raw"]
    checks: dict[str, dict[str, Any]] = {}
    peer = block["paired"].get(SERVED, {}).get("linearpost_blind")
    if peer is not None:
        worst, eo = peer["worst"]["estimate"], peer["eo"]["estimate"]
        checks["worst >= LinearPost blind"] = check(worst, worst >= 0)
        checks["eo <= LinearPost blind + 1"] = check(eo, eo <= 1.0)
    if setting == "compas":
        checks["eo <= 3.0"] = check(fair["eo"], fair["eo"] <= 3.0)
        checks["avg >= raw"] = check(fair["avg"] - raw["avg"], fair["avg"] >= raw["avg"])
    if setting == "adult":
        reduction = 100 * (1 - fair["eo"] / raw["eo"]) if raw["eo"] else 0.0
        checks["eo reduced >= 60%"] = check(reduction, reduction >= 60.0)
        checks["avg >= raw"] = check(fair["avg"] - raw["avg"], fair["avg"] >= raw["avg"])
    return checks


def _targets(setting: str, block: dict[str, Any]) -> list[str]:
    checks = outer_targets(setting, block)
    listed = "; ".join(f"{name}: {c['value']:.2f} ({'met' if c['met'] else '**missed**'})"
                       for name, c in checks.items())  # fmt: skip
    return [f"Targets (outer cross-validation): {listed}.", ""] if checks else []
