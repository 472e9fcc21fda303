"""How far the validation gate's verdicts held on the test split, which decided nothing.

Per setting: how many patches the gate validated and rejected; ``false_validations``, the
validated patches whose test-split EO bias did not fall or whose test accuracy fell by more than
the gate's accuracy tolerance; and ``coverage``, the share of validated patches whose test-split
EO change lies inside the interval the job reported for it (only for jobs that report one).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

ACC_TOLERANCE_PP = 5.0  # the gate's default tolerance on overall accuracy (GateConfig)


def gate_stats(runs: list[dict[str, Any]], acc_tolerance_pp: float = ACC_TOLERANCE_PP) -> dict:
    """``{setting: {...}, "all": {...}}`` from the runs' records (``__main__._run_record``)."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[run["setting"]].append(run)
        grouped["all"].append(run)
    return {key: _stats(rows, acc_tolerance_pp) for key, rows in grouped.items()}


def _stats(runs: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    validated = [r for r in runs if r["status"] == "validated"]
    false = [r for r in validated if _false_validation(r, tolerance)]
    with_interval = [r for r in validated if r.get("gate_eo_change") is not None]
    covered = [r for r in with_interval if _covered(r)]
    return {
        "validated": len(validated),
        "rejected": len(runs) - len(validated),
        "false_validations": len(false),
        "false_validation_runs": [_name(r) for r in false],
        "coverage": round(len(covered) / len(with_interval), 3) if with_interval else None,
        "covered": len(covered),
        "with_interval": len(with_interval),
        "acc_tolerance_pp": tolerance,
    }


def _test_change(run: dict[str, Any], metric: str) -> float:
    return run["rows"]["eraser_tuned"][metric] - run["rows"]["raw"][metric]


def _false_validation(run: dict[str, Any], tolerance: float) -> bool:
    return _test_change(run, "eo") >= 0 or -_test_change(run, "accuracy") > tolerance


def _covered(run: dict[str, Any]) -> bool:
    low, high = run["gate_eo_change"]
    return low <= _test_change(run, "eo") <= high


def _name(run: dict[str, Any]) -> str:
    return f"{run['setting']}/{run['variant']}/{run['calibration']}/seed {run['seed']}"
