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
# Label-free rows (``aggregate_label_free``): the Poisoner's served patches and the laboratory
# retraining row; kept out of ``ROWS``, which lists what every Eraser run measures.
LABEL_FREE = ("poisoner", "poisoner_eraser", "gce", "poisoner_retrain")
# Counterfactual rows (issue 15): the k-call baseline (every fixed-split run of the vanilla
# model with the full calibration set) and the FMD jobs' rows (``aggregate_fmd``).
COUNTERFACTUAL = ("cf_average", "fmd", "eraser+fmd")
ORDER = (*ROWS, *COUNTERFACTUAL, *LABEL_FREE)
METRICS = ("avg", "worst", "eo", "accuracy", "eod_fairlearn", "dpd_fairlearn", "eo_floor",
           "cf_bias")  # fmt: skip

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
    return (("vanilla", "unfair").index(parts[0]), len(parts), ORDER.index(parts[-1]))


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
    if "upstream_calls_per_decision" in samples[0]:
        out["upstream_calls_per_decision"] = samples[0]["upstream_calls_per_decision"]
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


# --- label-free rows ------------------------------------------------------------------------

DISCOVERY = ("misclassified_pct", "conflicting_pct", "precision_pct", "recall_pct",
             "agreement_pct", "agreement_of_y_pct")  # fmt: skip
ACC_TOLERANCE_PP = 5.0  # the gate's default max_acc_drop_pp


def aggregate_label_free(
    runs: list[dict[str, Any]], retrains: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """The label-free jobs (``protocol.evaluate_label_free``) and the laboratory retraining
    (``protocol.evaluate_retrain``) over seeds: the served rows, ``{setting: {"vanilla.poisoner":
    summary, ...}}`` (to merge into ``aggregate``'s summary), and per setting the details:
    each job's patch replayed offline (``candidate``), f_B's bias discovery (``bias_discovery``:
    the jobs' out-of-fold figures on their tuning rows, and the retraining f_B's on the training
    split), the jobs' times, and the laboratory row retrained without the focal part
    (``retrain_without_gifl``)."""
    rows: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    details: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"candidate": {}, "bias_discovery": {}, "job_s": {}}
    )
    by_row: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in [*runs, *retrains]:
        by_row[(run["setting"], run["row"])].append(run)
    for (setting, row), own in by_row.items():
        own = sorted(own, key=lambda r: r["seed"])
        key = f"{own[0]['variant']}.{row}"
        rows[setting][key] = [r["rows"][row] | {"_run": r} for r in own]
        if f"{row}_candidate" in own[0]["rows"]:
            samples = [r["rows"][f"{row}_candidate"] | {"_run": r} for r in own]
            replayed = _summary(key, samples)
            if len(replayed["groups"]) > MAX_GROUPS_STORED:
                del replayed["groups"]
            details[setting]["candidate"][row] = replayed
        if "job_s" in own[0]:
            details[setting]["job_s"][row] = [r["job_s"] for r in own]
        if "without_gifl" in own[0]:  # the laboratory row's Eq. 9 diagnostic (γ = 0)
            details[setting]["retrain_without_gifl"] = _mean_std(
                [r["without_gifl"] for r in own], ("avg", "worst", "eo", "accuracy")
            )
        discovery = [_discovery_of(r) for r in own]
        details[setting]["bias_discovery"][row] = _mean_std([d for d in discovery if d], DISCOVERY)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for setting, keyed in rows.items():
        summary[setting] = {}
        for key, samples in keyed.items():
            out = _summary(key, samples)
            runs_ = [s["_run"] for s in samples]
            if "status" in runs_[0]:  # a served patch: the gate's verdicts and α per seed
                out["rejected_by_gate"] = sum(r["status"] != "validated" for r in runs_)
                out["alpha"] = [r["alpha"] for r in runs_]
                out["calibration_rows"] = runs_[0]["calibration_rows"]
            else:  # the laboratory row: trained on the deployed model's training split
                out["laboratory"] = True
                out["training_rows"] = runs_[0]["training_rows"]
                out["calibration_rows"] = None
            out["label_free"] = True
            summary[setting][key] = out
    return summary, dict(details)


def _discovery_of(run: dict[str, Any]) -> dict[str, Any] | None:
    """A run's bias-discovery figures: a job's out-of-fold ones on its tuning rows, or the
    retraining f_B's on the training split."""
    discovery = run.get("bias_discovery") or {}
    return discovery.get("tuning_out_of_fold", discovery if "rows" in discovery else None)


def _mean_std(samples: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(samples)}
    for metric in metrics:
        values = [s[metric] for s in samples if s.get(metric) is not None]
        if values:
            out[metric] = round(float(np.mean(values)), 2)
            out[f"{metric}_std"] = (
                round(float(np.std(values, ddof=1)), 2) if len(values) > 1 else 0.0
            )
    return out


def merge_rows(
    summary: dict[str, dict[str, dict[str, Any]]], extra: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``summary`` with ``extra``'s rows added to their settings, in table order."""
    merged = {}
    for setting in {**summary, **extra}:
        rows = {**summary.get(setting, {}), **extra.get(setting, {})}
        merged[setting] = {key: rows[key] for key in sorted(rows, key=_order)}
    return merged


def label_free_targets(
    summary: dict[str, dict[str, dict[str, Any]]],
    runs: list[dict[str, Any]],
    eraser_runs: list[dict[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """The issue's label-free targets (vanilla model, served patches), each row on its own:
    on COMPAS worst-group within 2 points of the Eraser's (α chosen) and EO bias at least 50 %
    below raw; on Colored MNIST ρ = 0.9 worst-group ≥ 35; and no validated label-free patch
    losing more than the gate's accuracy tolerance on the test split. Each check also keeps
    its value per seed (``per_seed``; ``runs`` the label-free jobs, ``eraser_runs`` the
    Eraser's, for the COMPAS comparison)."""
    checks: dict[str, dict[str, Any]] = {}
    own = _by_seed(runs)
    eraser = {
        r["seed"]: r
        for r in eraser_runs or []
        if r["setting"] == "compas" and r["variant"] == "vanilla" and r["calibration"] == "full"
    }
    rows = summary.get("compas", {})
    raw, fair = rows.get("vanilla.raw"), rows.get("vanilla.eraser_tuned")
    compas = {}
    for row in ("poisoner", "poisoner_eraser"):
        served = rows.get(f"vanilla.{row}")
        if served is None or raw is None or fair is None:
            continue
        per_row = own.get(("compas", row), {})
        runs_ = [(per_row[s], eraser[s]) for s in sorted(per_row) if s in eraser]
        gap = served["worst"] - fair["worst"]
        compas[f"{row} worst >= eraser_tuned - 2"] = check(gap, gap >= -2.0) | {
            "per_seed": [
                _r2(lf["rows"][row]["worst"] - er["rows"]["eraser_tuned"]["worst"])
                for lf, er in runs_
            ]
        }
        reduction = _reduction(raw["eo"], served["eo"])
        compas[f"{row} eo reduced >= 50%"] = check(reduction, reduction >= 50.0) | {
            "per_seed": [
                _r2(_reduction(lf["rows"]["raw"]["eo"], lf["rows"][row]["eo"])) for lf, _ in runs_
            ]
        }
    if compas:
        checks["compas, label-free"] = compas
    rows = summary.get("cmnist_rho90", {})
    rho90 = {}
    for row in ("poisoner", "poisoner_eraser"):
        if (worst := rows.get(f"vanilla.{row}", {}).get("worst")) is None:
            continue
        per_seed = own.get(("cmnist_rho90", row), {})
        rho90[f"{row} worst >= 35"] = check(worst, worst >= 35.0) | {
            "per_seed": [_r2(per_seed[s]["rows"][row]["worst"]) for s in sorted(per_seed)]
        }
    if rho90:
        checks["cmnist_rho90, label-free"] = rho90
    if runs:
        drops: dict[int, float] = {}
        validated = [r for r in runs if r.get("status") == "validated"]
        for r in runs:
            drops.setdefault(r["seed"], 0.0)
        for r in validated:
            drop = r["rows"]["raw"]["accuracy"] - r["rows"][r["row"]]["accuracy"]
            drops[r["seed"]] = max(drops[r["seed"]], drop)
        worst_drop = max(drops.values())
        name = f"validated patches' largest accuracy drop <= {ACC_TOLERANCE_PP:g}"
        checks["label-free, every setting"] = {
            name: check(worst_drop, worst_drop <= ACC_TOLERANCE_PP)
            | {"per_seed": [_r2(drops[s]) for s in sorted(drops)], "validated": len(validated)}
        }
    return checks


def _by_seed(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    out: dict[tuple[str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for r in runs:
        out[(r["setting"], r["row"])][r["seed"]] = r
    return out


def _reduction(before: float, after: float) -> float:
    """How far (%) ``after`` lies below ``before`` (0 when ``before`` is 0)."""
    return 100 * (1 - after / before) if before else 0.0


def _r2(value: float) -> float:
    return round(float(value), 2)


# --- FMD rows (issue 15, §4) ----------------------------------------------------------------

FMD_ROWS = ("fmd", "eraser+fmd")
FMD_CF_CUT = 70.0  # % counterfactual bias removed by the served FMD patch
FMD_AVG_DROP = 1.0  # points of average-group accuracy it may cost


def aggregate_fmd(
    runs: list[dict[str, Any]],
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, Any]]]:
    """The FMD jobs (``protocol.evaluate_fmd``) over seeds: the served ``vanilla.fmd`` and the
    replayed ``vanilla.eraser+fmd`` rows (to merge into ``aggregate``'s summary), and per
    setting the details: the FMD patch replayed (``candidate``), the Eraser patch replayed
    alone beside the stack (``eraser_candidate``), the jobs' own counterfactual bias on their
    verdict rows and their times."""
    by_setting: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_setting[run["setting"]].append(run)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    details: dict[str, dict[str, Any]] = {}
    for setting, own in by_setting.items():
        own = sorted(own, key=lambda r: r["seed"])
        summary[setting] = {}
        for row in FMD_ROWS:
            samples = [r["rows"][row] | {"_run": r} for r in own if row in r["rows"]]
            if not samples:
                continue
            out = _summary(f"vanilla.{row}", samples)
            out["alpha"] = [r["alpha"] for r in own]
            if row == "fmd":
                out["rejected_by_gate"] = sum(r["status"] != "validated" for r in own)
            else:
                out["replayed"] = True  # both jobs' patches, each at its α, whatever the gate
            summary[setting][f"vanilla.{row}"] = out
        details[setting] = {
            part: _summary(part, [r["rows"][part] | {"_run": r} for r in own])
            for part in ("fmd_candidate", "eraser_candidate")
            if all(part in r["rows"] for r in own)
        }
        for d in details[setting].values():
            d.pop("groups", None)
        details[setting]["verdict_counterfactual_bias"] = [
            r.get("verdict_counterfactual_bias") for r in own
        ]
        details[setting]["job_s"] = [r["job_s"] for r in own]
        details[setting]["status"] = [r["status"] for r in own]
    return summary, details


def fmd_targets(
    summary: dict[str, dict[str, dict[str, Any]]],
    runs: list[dict[str, Any]],
    eraser_runs: list[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """The issue's FMD targets on COMPAS and Adult (vanilla model, full calibration set), each
    with its value per seed: the served FMD patch cuts counterfactual bias by at least 70 %
    with average-group accuracy at most 1 point lower than raw; the stack (Eraser + FMD,
    replayed) has an EO bias no higher than the better of the Eraser (served, α chosen) and
    the FMD patch (served) alone."""
    checks: dict[str, dict[str, Any]] = {}
    eraser = {
        (r["setting"], r["seed"]): r
        for r in eraser_runs
        if r["variant"] == "vanilla" and r["calibration"] == "full"
    }
    for setting in ("compas", "adult"):
        rows = summary.get(setting, {})
        raw, fmd = rows.get("vanilla.raw"), rows.get("vanilla.fmd")
        own = sorted((r for r in runs if r["setting"] == setting), key=lambda r: r["seed"])
        if raw is None or fmd is None or not own or "cf_bias" not in fmd:
            continue
        out: dict[str, Any] = {}
        cut = _reduction(raw["cf_bias"], fmd["cf_bias"])
        out[f"fmd cf_bias cut >= {FMD_CF_CUT:g}%"] = check(cut, cut >= FMD_CF_CUT) | {
            "per_seed": [
                _r2(_reduction(r["rows"]["raw"]["cf_bias"], r["rows"]["fmd"]["cf_bias"]))
                for r in own
            ]
        }
        drop = raw["avg"] - fmd["avg"]
        out[f"fmd avg drop <= {FMD_AVG_DROP:g}"] = check(drop, drop <= FMD_AVG_DROP) | {
            "per_seed": [_r2(r["rows"]["raw"]["avg"] - r["rows"]["fmd"]["avg"]) for r in own]
        }
        stacked, fair = rows.get("vanilla.eraser+fmd"), rows.get("vanilla.eraser_tuned")
        paired = [(r, eraser[(setting, r["seed"])]) for r in own
                  if "eraser+fmd" in r["rows"] and (setting, r["seed"]) in eraser]  # fmt: skip
        if stacked is not None and fair is not None and paired:
            excess = stacked["eo"] - min(fair["eo"], fmd["eo"])
            out["eraser+fmd eo <= min(eraser_tuned, fmd)"] = check(excess, excess <= 0.0) | {
                "per_seed": [
                    _r2(
                        r["rows"]["eraser+fmd"]["eo"]
                        - min(e["rows"]["eraser_tuned"]["eo"], r["rows"]["fmd"]["eo"])
                    )
                    for r, e in paired
                ]
            }
        checks[f"{setting}, fmd"] = out
    return checks
