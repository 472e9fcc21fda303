"""The training report stored with every version: out-of-fold numbers as JSON, and a PNG plot.

Operators decide whether to activate from this, so it shows the evidence the gate used: group
accuracies raw vs fair, the α curve with the chosen α, and how distillation and export went.
"""

from __future__ import annotations

import io
from typing import Any

import orjson

from patch_training.alpha import AlphaChoice
from patch_training.gate import Verdict
from patch_training.metrics import GroupReport
from service.registry.models import PatchReport


def _metrics(report: GroupReport) -> dict[str, Any]:
    return {**report.as_percent(), "group_acc": {k: 100 * v for k, v in report.group_acc.items()}}


def report_dict(
    *,
    patch: str,
    bias: str,
    choice: AlphaChoice,
    verdict: Verdict,
    training: dict[str, Any],
    calibration: dict[str, Any],
) -> dict[str, Any]:
    """Everything measured out of fold, in percent (paper Eq. 20 for the EO bias)."""
    return {
        "patch": patch,
        "bias": bias,
        "metrics_unit": "percent; eo_bias = paper Eq. 20 on calibration rows judged out of fold",
        "raw": _metrics(choice.at(0.0)),
        "fair": _metrics(choice.at(choice.alpha)),
        "alpha_1": _metrics(choice.at(1.0)),
        "alpha": {
            "chosen": choice.alpha,
            "rule": choice.rule,
            "curve": [{"alpha": p.alpha, **p.report.as_percent()} for p in choice.curve],
        },
        "gate": {"passed": verdict.passed, "reason": verdict.reason},
        "training": training,
        "calibration": calibration,
    }


def render_png(report: dict[str, Any]) -> bytes:
    """Two panels: per-group accuracy raw vs fair, and the α curve (headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    bars, curve = fig.subplots(1, 2)
    _group_bars(bars, report)
    _alpha_curve(curve, report)
    fig.suptitle(f"{report['patch']}: calibration rows out of fold (bias: {report['bias']})")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def _group_bars(ax: Any, report: dict[str, Any]) -> None:
    groups = list(report["raw"]["group_acc"])
    xs = range(len(groups))
    raw = [report["raw"]["group_acc"][g] for g in groups]
    fair = [report["fair"]["group_acc"].get(g, 0.0) for g in groups]
    ax.bar([x - 0.2 for x in xs], raw, width=0.4, label="raw")
    ax.bar([x + 0.2 for x in xs], fair, width=0.4, label=f"fair (α={report['alpha']['chosen']})")
    ax.set_xticks(list(xs), groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("group accuracy (target, bias)")
    ax.legend()


def _alpha_curve(ax: Any, report: dict[str, Any]) -> None:
    points = report["alpha"]["curve"]
    alphas = [p["alpha"] for p in points]
    for key, label in (
        ("worst_group_acc", "worst-group acc"),
        ("avg_group_acc", "avg-group acc"),
        ("eo_bias", "EO bias"),
    ):
        ax.plot(alphas, [p[key] for p in points], marker=".", label=label)
    ax.axvline(report["alpha"]["chosen"], color="grey", linestyle="--", label="chosen α")
    ax.set_xlabel("α")
    ax.set_ylabel("%")
    ax.set_title("α curve")
    ax.legend(fontsize=8)


def stored_report(report: dict[str, Any]) -> PatchReport:
    """What the registry keeps with the version."""
    return PatchReport(
        json_bytes=orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY),
        png=render_png(report),
    )
