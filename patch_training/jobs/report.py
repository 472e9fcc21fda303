"""The training report stored with every version: JSON, and a PNG plot.

Operators decide whether to activate from this, so it shows the evidence the gate used and which
rows decided what: the headline numbers and the verdict come from the verdict rows (the served
artifact, with bootstrap intervals), the α curve from the tuning rows out of fold (with a band).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import orjson

from patch_training.alpha import AlphaChoice
from patch_training.gate import Verdict
from patch_training.metrics import GroupReport
from service.jobs.spec import Evidence
from service.registry.models import PatchReport


@dataclass(frozen=True)
class RowCounts:
    calibration: int
    tuning: int
    verdict: int
    folds: int


def _metrics(report: GroupReport) -> dict[str, Any]:
    return {**report.as_percent(), "group_acc": {k: 100 * v for k, v in report.group_acc.items()}}


def report_dict(
    *,
    patch: str,
    bias: str | None,
    choice: AlphaChoice,
    verdict: Verdict,
    evidence: Evidence,
    at_alpha_1: GroupReport,
    rows: RowCounts,
    training: dict[str, Any],
    calibration: dict[str, Any],
) -> dict[str, Any]:
    """Percent throughout (paper Eq. 20 for the EO bias); see the module docstring."""
    return {
        "patch": patch,
        "bias": bias,
        "metrics_unit": (
            f"percent; intervals are {100 * evidence.confidence:g}% bootstrap percentile "
            "intervals, resampling within each (target, bias) group"
        ),
        "rows": _rows(rows),
        "verdict": {
            "passed": verdict.passed,
            "reason": verdict.reason,
            "rows_per_group_needed": verdict.rows_per_group_needed,
            **evidence.model_dump(),
        },
        "raw": _point(evidence, "raw"),
        "fair": _point(evidence, "fair"),
        "alpha_1": _metrics(at_alpha_1),
        "alpha": {
            "chosen": choice.alpha,
            "class_offset": list(choice.offset) if choice.offset is not None else None,
            "rule": choice.rule,
            "judged_on": f"{rows.tuning} tuning rows, each by the fold net that did not fit it",
            "curve": [
                {
                    "alpha": p.alpha,
                    "class_offset": list(p.offset) if p.offset is not None else None,
                    **p.report.as_percent(),
                    "band": p.band,
                }
                for p in choice.curve
            ],
        },
        "gate": {"passed": verdict.passed, "reason": verdict.reason},
        "training": training,
        "calibration": calibration,
    }


def _rows(rows: RowCounts) -> dict[str, Any]:
    return {
        "calibration": rows.calibration,
        "tuning": rows.tuning,
        "verdict": rows.verdict,
        "decided": {
            "fitting and early stopping": f"tuning rows, in {rows.folds} fold(s)",
            "alpha": "tuning rows, out of fold",
            "verdict and the headline numbers": "verdict rows, used for nothing else",
        },
    }


def _point(evidence: Evidence, stage: str) -> dict[str, Any]:
    """A stage's estimates on the verdict rows, in the shape the plot reads."""
    metrics = getattr(evidence, stage)
    groups = evidence.groups[stage]
    return {
        **{m: v.estimate for m, v in metrics.items()},
        "group_acc": {g: v.estimate for g, v in groups.items()},
    }


def render_png(report: dict[str, Any]) -> bytes:
    """Two panels: per-group accuracy raw vs fair with error bars, and the α curve with its
    bands (headless backend). A label-free report (``label_free``) adds f_B's training loss
    and the share of poisoned labels per pass over the rows, one line per fold; an FMD report
    (``fmd``) adds counterfactual bias raw → fair with its intervals and the K curve."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    label_free, fmd = report.get("label_free"), report.get("fmd")
    if label_free is None and fmd is None:
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        bars, curve = fig.subplots(1, 2)
    else:
        fig = Figure(figsize=(11, 8.4), layout="constrained")
        (bars, curve), (lower_left, lower_right) = fig.subplots(2, 2)
        if label_free is not None:
            _biased_curves(lower_left, lower_right, label_free)
        else:
            _counterfactual_bars(lower_left, fmd)
            _k_curve(lower_right, fmd)
    _group_bars(bars, report)
    _alpha_curve(curve, report)
    groups = f"bias: {report['bias']}" if report["bias"] is not None else "pseudo-groups y × f_B"
    if label_free is not None and report["bias"] is not None:
        groups += ", evaluation only"
    fig.suptitle(f"{report['patch']} ({groups}): {_verdict_line(report)}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _verdict_line(report: dict[str, Any]) -> str:
    verdict = report["verdict"]
    line = f"{'validated' if verdict['passed'] else 'rejected'} on {verdict['rows']} verdict rows"
    if "label_free" in report:
        line += f"; kept {report['label_free']['kept']}"
    if "fmd" in report:
        line += f"; FMD, K = {100 * report['fmd']['k']['chosen_fraction']:g} %"
    return line


def _biased_curves(loss: Any, poisoned: Any, section: dict[str, Any]) -> None:
    """f_B's training loss and its share of poisoned labels, per pass, one line per fold."""
    for i, fold in enumerate(section["biased_model"]["folds"]):
        loss.plot(fold["step"], fold["loss"], marker=".", label=f"fold {i}")
        poisoned.plot(
            fold["step"], [100 * v for v in fold["poisoned_share"]], marker=".", label=f"fold {i}"
        )
    name = section["biased_model"]["loss"]
    loss.set_xlabel("step")
    loss.set_ylabel("mean training loss")
    loss.set_title(f"f_B training ({name}), per pass over the rows")
    poisoned.set_xlabel("step")
    poisoned.set_ylabel("% of rows")
    poisoned.set_title("labels poisoned (differ from y), per pass")
    for ax in (loss, poisoned):
        ax.legend(fontsize=8)


def _counterfactual_bars(ax: Any, section: dict[str, Any]) -> None:
    """FMD: counterfactual bias on the verdict rows, raw and fair at the chosen α, overall and
    per group of the attribute, with their bootstrap intervals; fair at α = 1 as a marker."""
    cf = section["counterfactual_bias"]
    rows = {"all": {"raw": cf["raw"], "fair": cf["fair"]}} | cf.get("groups", {})
    names = list(rows)
    xs = range(len(names))
    for offset, stage in ((-0.2, "raw"), (0.2, "fair")):
        values = [rows[g][stage] for g in names]
        estimates = [v["estimate"] for v in values]
        errors = [
            [max(v["estimate"] - v["low"], 0.0) for v in values],
            [max(v["high"] - v["estimate"], 0.0) for v in values],
        ]
        label = "raw" if stage == "raw" else f"fair (α={cf['alpha']})"
        ax.bar([x + offset for x in xs], estimates, width=0.4, yerr=errors, capsize=3, label=label)
    ax.plot([0.2], [cf["fair_at_alpha_1"]], "kD", label="fair at α = 1")
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("counterfactual bias (%)")
    change = cf["change"]
    ax.set_title(
        f"counterfactual bias ({section['attribute']}) on {cf['rows']} verdict rows\n"
        f"raw {cf['raw']['estimate']:.2f} → fair {cf['fair']['estimate']:.2f}, change "
        f"{change['estimate']:+.2f} [{change['low']:+.2f}, {change['high']:+.2f}] points",
        fontsize=9,
    )
    ax.legend(fontsize=8)


def _k_curve(ax: Any, section: dict[str, Any]) -> None:
    """FMD: the out-of-fold K curve on the tuning rows: counterfactual bias of the served
    answer and of the surrogate, and average-group accuracy (right axis), per K; the chosen K
    marked, Ks ruled out by the accuracy floor hollow."""
    curve = section["k"]["curve"]
    xs = list(range(len(curve)))
    served = [c["served_cf_bias"] for c in curve]
    ax.plot(xs, served, "-", color="C0", label="served cf bias (α = 1)")
    ax.plot(
        xs, [c["surrogate_cf_bias"] for c in curve], "--", color="C1", label="surrogate cf bias"
    )
    ruled_out = [i for i, c in enumerate(curve) if not c.get("eligible", True)]
    ax.plot(xs, served, "o", color="C0", markersize=4)
    if ruled_out:
        ax.plot(ruled_out, [served[i] for i in ruled_out], "o", color="white",
                markeredgecolor="C0", markersize=6, label="ruled out (accuracy)")  # fmt: skip
    chosen = [i for i, c in enumerate(curve) if c.get("chosen")]
    for i in chosen:
        ax.axvline(
            i, color="grey", linestyle=":", label=f"chosen K = {100 * curve[i]['k_fraction']:g} %"
        )
    ax.set_xticks(xs, [f"{100 * c['k_fraction']:g}" for c in curve], fontsize=8)
    ax.set_xlabel("K (% of each fold's fit rows replaced)")
    ax.set_ylabel("counterfactual bias (%)")
    accuracy = ax.twinx()
    accuracy.plot(xs, [c["avg_group_acc"] for c in curve], "-.", color="C2", marker=".")
    accuracy.set_ylabel("avg-group accuracy (%)", color="C2")
    ax.set_title("K curve on the tuning rows, out of fold", fontsize=9)
    ax.legend(fontsize=8)


def _group_bars(ax: Any, report: dict[str, Any]) -> None:
    groups = report["verdict"]["groups"]
    names = list(groups["raw"])
    xs = range(len(names))
    for offset, stage, label in ((-0.2, "raw", "raw"), (0.2, "fair", "fair")):
        values = [groups[stage][g] for g in names]
        estimates = [v["estimate"] for v in values]
        errors = [
            [v["estimate"] - v["low"] for v in values],
            [v["high"] - v["estimate"] for v in values],
        ]
        if stage == "fair":
            label = f"fair (α={report['alpha']['chosen']})"
        ax.bar([x + offset for x in xs], estimates, width=0.4, yerr=errors, capsize=3, label=label)
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    kind = "group" if report["bias"] is not None else "pseudo-group (y × f_B class)"
    ax.set_title(f"{kind} accuracy on the verdict rows (interval bars)")
    ax.legend()


def _alpha_curve(ax: Any, report: dict[str, Any]) -> None:
    curve = report["alpha"]["curve"]
    raw = [p for p in curve if p["alpha"] == 0.0][:1]
    plain = [p for p in curve if p.get("class_offset") is None]
    shifted = raw + [p for p in curve if p.get("class_offset") is not None]
    variants = [(plain, "", "-")] if len(shifted) <= 1 else [(shifted, "", "-")]
    if len(shifted) > 1 and len(plain) > 1:  # class_offset "auto": both curves, plain dashed
        variants.append((plain, " (no offset)", "--"))
    metrics = (
        ("worst_group_acc", "worst-group acc"),
        ("avg_group_acc", "avg-group acc"),
        ("eo_bias", "EO bias"),
    )
    for points, suffix, style in variants:
        alphas = [p["alpha"] for p in points]
        for i, (key, label) in enumerate(metrics):
            color = f"C{i}"
            ax.plot(alphas, [p[key] for p in points], style, marker=".", color=color,
                    label=label + suffix)  # fmt: skip
            if style == "-":
                low = [p["band"][key][0] for p in points]
                high = [p["band"][key][1] for p in points]
                ax.fill_between(alphas, low, high, color=color, alpha=0.15)
    ax.axvline(report["alpha"]["chosen"], color="grey", linestyle="--", label="chosen α")
    ax.set_xlabel("α")
    ax.set_ylabel("%")
    ax.set_title("α curve on the tuning rows, out of fold (bands)")
    ax.legend(fontsize=8)


def stored_report(report: dict[str, Any]) -> PatchReport:
    """What the registry keeps with the version."""
    return PatchReport(
        json_bytes=orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY),
        png=render_png(report),
    )
