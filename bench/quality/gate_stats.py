"""How far the validation gate's verdicts held on the test split, which decided nothing.

Per setting:

- ``validated`` / ``rejected``: the gate's verdicts;
- ``false_validations``: validated patches whose test-split EO bias did not fall, or whose test
  accuracy fell by more than the gate's accuracy tolerance;
- ``missed``: rejected patches that would have passed that same test — EO bias down by at least
  the gate's margin, accuracy within tolerance — had they been served (``candidate.py`` replays
  them offline); the gate's other error;
- ``coverage``: the share of validated patches whose test-split EO change lies inside the
  interval the job reported for it, with a 90 % Wilson interval on that share. A patch is
  validated *because* its verdict rows looked good, so this share is expected to fall below the
  intervals' nominal level (selection); ``coverage_all`` is the same share over every judged
  patch, validated or not, which is what the nominal level promises. Patches whose verdict rows
  could not measure EO at all (no class in two bias groups) have no interval to cover.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from scipy.stats import binomtest

ACC_TOLERANCE_PP = 5.0  # the gate's default tolerance on overall accuracy (GateConfig)
MIN_REDUCTION_PP = 1.0  # the gate's default margin on the EO bias reduction (GateConfig)
SHARE_CONFIDENCE = 0.9


def gate_stats(runs: list[dict[str, Any]], acc_tolerance_pp: float = ACC_TOLERANCE_PP) -> dict:
    """``{setting: {...}, "all": {...}}`` from the runs' records (``__main__._run_record``)."""
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[run["setting"]].append(run)
        grouped["all"].append(run)
    return {key: _stats(rows, acc_tolerance_pp) for key, rows in grouped.items()}


def _stats(runs: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    validated = [r for r in runs if r["status"] == "validated"]
    rejected = [r for r in runs if r["status"] != "validated"]
    false = [r for r in validated if not _holds(r, tolerance)]
    missed = [r for r in rejected if "candidate" in r["rows"] and _holds(r, tolerance)]
    judged = [r for r in runs if _has_interval(r)]
    return {
        "validated": len(validated),
        "rejected": len(rejected),
        "false_validations": len(false),
        "false_validation_runs": [_name(r) for r in false],
        "missed": len(missed),
        "missed_runs": [_name(r) for r in missed],
        "replayed": sum("candidate" in r["rows"] for r in rejected),
        "rejected_because": dict(Counter(_why(r) for r in rejected).most_common()),
        **_share("coverage", [r for r in validated if _has_interval(r)]),
        **_share("coverage_all", judged),
        "acc_tolerance_pp": tolerance,
    }


def _share(key: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    covered = sum(_covered(r) for r in runs)
    out: dict[str, Any] = {key: round(covered / len(runs), 3) if runs else None}
    if key == "coverage":  # the names earlier results used
        out |= {"covered": covered, "with_interval": len(runs)}
    else:
        out |= {f"{key}_covered": covered, f"{key}_judged": len(runs)}
    if runs:
        ci = binomtest(covered, len(runs)).proportion_ci(SHARE_CONFIDENCE, method="wilson")
        out[f"{key}_interval"] = [round(float(ci.low), 3), round(float(ci.high), 3)]
    return out


def _patched(run: dict[str, Any]) -> dict[str, Any]:
    """The test-split row of the job's patch: replayed when the run has it, else as served."""
    return run["rows"].get("candidate") or run["rows"]["eraser_tuned"]


def _test_change(run: dict[str, Any], metric: str) -> float:
    return _patched(run)[metric] - run["rows"]["raw"][metric]


def _holds(run: dict[str, Any], tolerance: float) -> bool:
    """EO bias down by the gate's margin and accuracy within tolerance, on the test split."""
    return -_test_change(run, "eo") >= MIN_REDUCTION_PP and -_test_change(run, "accuracy") <= (
        tolerance
    )


def _has_interval(run: dict[str, Any]) -> bool:
    if run.get("gate_eo_change") is None:
        return False
    return (run.get("verdict") or {}).get("comparable_classes") != 0


def _covered(run: dict[str, Any]) -> bool:
    low, high = run["gate_eo_change"]
    return low <= _test_change(run, "eo") <= high


def _why(run: dict[str, Any]) -> str:
    """The verdict's first words: "not enough evidence", or the criterion that failed."""
    return (run.get("verdict") or {}).get("why", "unrecorded")


def _name(run: dict[str, Any]) -> str:
    return f"{run['setting']}/{run['variant']}/{run['calibration']}/seed {run['seed']}"
