"""Counterfactual bias (FMD, Chen et al. 2023, Def. 1), measured on any black box.

For rows x, their counterfactuals x̄ (the same row with the attribute set otherwise) and a
model's normalised log-probabilities on both::

    ŷ(x)  = argmax_k p(k | x)                      the decision on the original row
    c(x)  = mean over x̄ of | p(ŷ | x) − p(ŷ | x̄) |  the row's change
    B     = mean over rows of c(x)                   counterfactual bias, in [0, 1]

With one counterfactual per row (a binary attribute flipped) c is the plain difference; with
several (an attribute with k values set to each of the k − 1 others, or M uploaded x̄ per row)
it is their average. A row *flips* when some x̄'s decision differs from ŷ.

The same numbers are computed for the raw black box and for what the gateway serves (the active
stack applied to the same raw answers, ``service.eraser_math.fair_log_probs``); the served
decision ŷ is the served answer's own. Intervals are basic bootstrap intervals over rows
(``bootstrap.interval``); raw and served are resampled with the same rows, so their difference
has its own interval. Everything here is numpy; the job that queries the black box and stores
the result is ``patch_training.jobs.audit_entry``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from patch_training.bootstrap import interval
from service.jobs.audits import (
    AttributeAudit,
    GroupAudit,
    Histogram,
    Interval,
    RankEntry,
    StageAudit,
    TopRow,
)

HIST_BINS = 20
# A row "changes" only beyond float32 rounding of the answers: a model that ignores the attribute
# can still answer x and x̄ a few ulps apart (another summation order in the runtime's kernels).
NOISE = 1e-6
MAX_CELLS = 2_000_000  # values × draws resampled at once (memory bound of one chunk)


@dataclass(frozen=True)
class RowChanges:
    """Per-row quantities of one stage: its decision, the change and whether it flips."""

    decision: np.ndarray  # int [N]
    p: np.ndarray  # float [N]: p(ŷ | x)
    p_cf: np.ndarray  # float [N]: mean over x̄ of p(ŷ | x̄)
    change: np.ndarray  # float [N]: c(x)
    flipped: np.ndarray  # bool [N]


def row_changes(log_p: np.ndarray, log_p_cf: np.ndarray) -> RowChanges:
    """``log_p`` [N, K] on the rows, ``log_p_cf`` [N, M, K] on their M counterfactuals."""
    if log_p_cf.ndim != 3 or log_p_cf.shape[0] != log_p.shape[0]:
        raise ValueError(f"counterfactual answers {log_p_cf.shape} do not match {log_p.shape}")
    decision = np.argmax(log_p, axis=1)
    rows = np.arange(len(decision))
    p = np.exp(log_p[rows, decision])
    p_cf_each = np.exp(log_p_cf[rows, :, decision])  # [N, M]
    change = np.abs(p[:, None] - p_cf_each).mean(axis=1)
    flipped = (np.argmax(log_p_cf, axis=2) != decision[:, None]).any(axis=1)
    return RowChanges(decision, p, p_cf_each.mean(axis=1), change, flipped)


def resampled_means(series: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means [draws, S] of each series [S, n], every draw using the same rows for
    all series (so their differences are resampled as pairs)."""
    n = series.shape[1]
    out = np.empty((draws, series.shape[0]))
    chunk = max(1, MAX_CELLS // max(n * series.shape[0], 1))
    for start in range(0, draws, chunk):
        stop = min(draws, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = series[:, idx].mean(axis=2).T
    return out


def stage_audit(
    changes: RowChanges,
    groups: np.ndarray,
    classes: Sequence[str],
    draws: np.ndarray,
    group_draws: dict[str, np.ndarray],
    confidence: float,
    top_rows: int,
) -> StageAudit:
    """One stage's audit from its row changes and its resampled means: ``draws`` [D, 2]
    (change, flipped) over all rows, ``group_draws`` group → [D] resampled changes."""
    by_group = {}
    for name in sorted(group_draws):
        rows = groups == name
        by_group[name] = GroupAudit(
            rows=int(rows.sum()),
            bias=interval(float(changes.change[rows].mean()), group_draws[name], confidence),
            flip_share=round(100 * float(changes.flipped[rows].mean()), 4),
        )
    counts, edges = np.histogram(changes.change, bins=HIST_BINS, range=(0.0, 1.0))
    order = np.argsort(-changes.change, kind="stable")[:top_rows]
    top = [
        TopRow(
            row=int(i),
            group=str(groups[i]),
            change=round(float(changes.change[i]), 6),
            p_decision=round(float(changes.p[i]), 6),
            p_counterfactual=round(float(changes.p_cf[i]), 6),
            decision=classes[int(changes.decision[i])],
            flipped=bool(changes.flipped[i]),
        )
        for i in order
        if changes.change[i] > NOISE
    ]
    return StageAudit(
        bias=interval(float(changes.change.mean()), draws[:, 0], confidence),
        flip_share=interval(float(changes.flipped.mean()), draws[:, 1], confidence),
        groups=by_group,
        histogram=Histogram(edges=edges.round(6).tolist(), counts=counts.tolist()),
        top_rows=top,
    )


def audit_attribute(
    *,
    name: str,
    source: str,
    values: list[str] | None,
    groups: np.ndarray,
    classes: Sequence[str],
    raw: tuple[np.ndarray, np.ndarray],
    served: tuple[np.ndarray, np.ndarray] | None,
    draws: int,
    confidence: float,
    top_rows: int,
    seed: int,
) -> tuple[AttributeAudit, dict[str, np.ndarray]]:
    """The audit of one attribute; ``raw`` and ``served`` are (log_p [N, K], log_p_cf
    [N, M, K]). Also answers the per-row changes by stage (for the plot)."""
    stages = {"raw": row_changes(*raw)}
    if served is not None:
        stages["served"] = row_changes(*served)
    rng = np.random.default_rng(seed)
    series = np.stack([s for c in stages.values() for s in (c.change, c.flipped.astype(float))])
    resampled = resampled_means(series, draws, rng)  # [D, 2 · stages]
    per_group: dict[str, dict[str, np.ndarray]] = {s: {} for s in stages}
    for group in np.unique(groups):
        rows = groups == group
        sub = np.stack([c.change[rows] for c in stages.values()])
        means = resampled_means(sub, draws, rng)
        for j, stage in enumerate(stages):
            per_group[stage][str(group)] = means[:, j]
    audits = {
        stage: stage_audit(
            changes,
            groups,
            classes,
            resampled[:, 2 * j : 2 * j + 2],
            per_group[stage],
            confidence,
            top_rows,
        )
        for j, (stage, changes) in enumerate(stages.items())
    }
    change = None
    if served is not None:
        diff = float(stages["served"].change.mean() - stages["raw"].change.mean())
        change = interval(diff, resampled[:, 2] - resampled[:, 0], confidence, bounds=(-1, 1))
    audit = AttributeAudit(
        attribute=name,
        source=source,  # type: ignore[arg-type]
        values=values,
        counterfactuals_per_row=int(raw[1].shape[1]),
        raw=audits["raw"],
        served=audits.get("served"),
        change=change,
    )
    return audit, {stage: c.change for stage, c in stages.items()}


def ranked(audits: list[AttributeAudit]) -> tuple[list[AttributeAudit], list[RankEntry]]:
    """Most biased first (raw counterfactual bias), ties by name."""
    order = sorted(audits, key=lambda a: (-a.raw.bias.estimate, a.attribute))
    ranking = [
        RankEntry(
            attribute=a.attribute,
            raw=a.raw.bias.estimate,
            served=a.served.bias.estimate if a.served is not None else None,
        )
        for a in order
    ]
    return order, ranking


def _bias_bars(ax: Any, audits: list[AttributeAudit]) -> None:
    names = [a.attribute for a in audits]
    y = np.arange(len(names))
    stages = [("raw", "tab:red")]
    if any(a.served is not None for a in audits):
        stages.append(("served", "tab:blue"))
    height = 0.8 / len(stages)
    for j, (stage, color) in enumerate(stages):
        points: list[Interval | None] = [
            getattr(a, stage).bias if getattr(a, stage) else None for a in audits
        ]
        est = [p.estimate if p else np.nan for p in points]
        err = [
            [p.estimate - p.low if p else 0 for p in points],
            [p.high - p.estimate if p else 0 for p in points],
        ]
        ax.barh(y + j * height, est, height, xerr=err, color=color, label=stage, capsize=3)
    ax.set_yticks(y + height * (len(stages) - 1) / 2, names)
    ax.invert_yaxis()
    ax.set_xlabel("counterfactual bias B (percent)")
    ax.set_title("by attribute, most biased first")
    ax.legend()


def render_png(
    audits: list[AttributeAudit], changes: dict[str, dict[str, np.ndarray]], title: str
) -> bytes:
    """Two panels: B per attribute (raw and served, with intervals), and the distribution of
    per-row changes |p(ŷ|x) − p(ŷ|x̄)| per attribute and stage (headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 0.6 * len(audits) + 3.6), layout="constrained")
    bars, hist = fig.subplots(1, 2)
    _bias_bars(bars, audits)
    edges = np.linspace(0, 1, HIST_BINS + 1)
    for audit in audits:
        for stage, style in (("raw", "-"), ("served", "--")):
            values = changes[audit.attribute].get(stage)
            if values is None:
                continue
            counts, _ = np.histogram(values, bins=edges)
            share = 100 * counts / max(len(values), 1)
            hist.step(edges[1:], share, where="pre", ls=style, label=f"{audit.attribute} {stage}")
    hist.set_yscale("symlog", linthresh=1)
    hist.set_xlabel("per-row change |p(ŷ|x) − p(ŷ|x̄)|")
    hist.set_ylabel("percent of rows")
    hist.set_title("distribution of per-row changes")
    hist.legend(fontsize="small")
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()
