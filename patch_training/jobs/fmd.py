"""An FMD job (``method: "fmd"``): the shared pipeline plus counterfactuals.

For each bias column (the attribute): every calibration row's counterfactuals — the uploaded
pairs when the set has them for the column (an attribute that is not an input: images, say),
else the row with the input column set to each of its other values
(``flipped_counterfactuals``, the audit's own construction) — and the black box is queried on
those rows too (cached like the originals);
the rows are split as for every method, stratified by (target, attribute); the method
(``methods.fmd``) fits on the tuning rows only; α, the export, the gate (groups: the
attribute's values) and the registration are the shared steps. The report adds an ``fmd``
section: counterfactual bias raw → fair on the verdict rows with bootstrap intervals (the
audit's measure, ``audit.audit_attribute``, on the exported graph), the K curve the tuning rows
chose on, and the calibration rows most harmful to counterfactual fairness.

Verdict rows decide nothing: their counterfactual answers are queried with the rest, but
only this report and the gate read them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from patch_training.audit import audit_attribute
from patch_training.evidence import served_log_bias
from patch_training.folds import RowPlan
from patch_training.jobs.pipeline import (
    Extra,
    JobRun,
    Outcomes,
    TrainedPatch,
    patch_for_column,
    per_bias_column,
    query_answers,
)
from patch_training.methods.base import Counterfactuals
from service.calibration.audit_input import AuditAttribute, flipped_counterfactuals
from service.calibration.dataset import CalibrationSet
from service.eraser_math import fair_log_probs
from service.jobs.spec import PatchOutcome
from service.settings import ModelConfig

if TYPE_CHECKING:
    from patch_training.jobs.context import JobContext
    from patch_training.methods.fmd import FmdPatch

log = logging.getLogger(__name__)

TOP_HARMFUL = 10  # calibration rows listed in the report


def counterfactuals_of(calib: CalibrationSet, model: ModelConfig, column: str) -> AuditAttribute:
    """The counterfactuals of every calibration row for ``column``: the uploaded pairs when the
    set has them for it (an attribute that is not an input; groups from the file's column),
    else the row with the input column set to each of its other values (as the audit)."""
    pairs = calib.pairs.get(column)
    if pairs is not None:
        return AuditAttribute(column, "pairs", calib.bias[column], pairs)
    features = list(model.input.features or ())
    if column not in features:
        raise ValueError(
            f"FMD's attribute {column!r} is not an input column of {model.name!r} and the "
            "calibration set has no counterfactual pairs for it"
        )
    return flipped_counterfactuals(column, calib.x, features.index(column))


async def query_counterfactuals(
    model: ModelConfig, x_cf: np.ndarray, ctx: JobContext
) -> np.ndarray:
    """The black box's log-probabilities on the counterfactual rows, [N, M, K] (cached)."""
    n, m = x_cf.shape[:2]
    flat = x_cf.reshape(n * m, *x_cf.shape[2:])
    answers = await query_answers(model, flat, ctx, "query counterfactuals")
    return answers.log_p.reshape(n, m, -1)


async def run_fmd(job: JobRun) -> Outcomes:
    """One FMD patch per bias column, after the black-box query of the originals."""
    return await per_bias_column(job, lambda column: _fmd_patch(job, column))


async def _fmd_patch(job: JobRun, column: str) -> tuple[PatchOutcome, RowPlan]:
    """The counterfactuals of ``column`` and the black box's answers on them, then the shared
    per-column steps with the FMD report section."""
    from patch_training.methods.fmd import Fmd

    attribute = counterfactuals_of(job.calib, job.model, column)
    with job.timer("query"):
        log_m_cf = await query_counterfactuals(job.model, attribute.x_cf, job.ctx)
    cf = Counterfactuals(attribute.x_cf, log_m_cf)

    def extra(trained: TrainedPatch, plan: RowPlan) -> Extra:
        section, cf_bias = fmd_section(job, trained, plan, cf, attribute)
        log.info(
            "FMD %s: counterfactual bias %.2f → %.2f on the verdict rows (α = %g)",
            column,
            cf_bias["raw"]["estimate"],
            cf_bias["fair"]["estimate"],
            trained.alpha.alpha,
        )
        return Extra(report={"fmd": section}, outcome={"counterfactual_bias": cf_bias})

    return await patch_for_column(job, Fmd(), column, cf, job.spec.fmd.epochs, extra)


def verdict_counterfactual_bias(
    blob: bytes,
    alpha: float,
    x: np.ndarray,
    log_m: np.ndarray,
    cf: Counterfactuals,
    groups: np.ndarray,
    name: str,
    source: str,
    values: list[str] | None,
    model: ModelConfig,
    draws: int,
    confidence: float,
    seed: int,
) -> tuple[Any, float]:
    """The audit of ``name`` on rows ``x`` (already the verdict rows): raw, and served through
    the exported graph at ``alpha``; plus the served B at α = 1 (percent)."""
    n, m = cf.x.shape[:2]
    log_g = served_log_bias(blob, x, model)
    flat = cf.x.reshape(n * m, *cf.x.shape[2:])
    log_g_cf = served_log_bias(blob, flat, model).reshape(n, m, -1)

    def served(a: float) -> tuple[np.ndarray, np.ndarray]:
        return (
            fair_log_probs(log_m, [log_g], [a]),
            fair_log_probs(cf.log_m, [log_g_cf], [a]),
        )

    audit, _ = audit_attribute(
        name=name,
        source=source,
        values=values,
        groups=groups,
        classes=model.classes,
        raw=(log_m, cf.log_m),
        served=served(alpha),
        draws=draws,
        confidence=confidence,
        top_rows=0,
        seed=seed,
    )
    from patch_training.audit import row_changes

    at_one = 100 * float(row_changes(*served(1.0)).change.mean())
    return audit, at_one


def fmd_section(
    job: JobRun,
    trained: TrainedPatch,
    plan: RowPlan,
    cf: Counterfactuals,
    attribute: AuditAttribute,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's ``fmd`` section and the outcome's ``counterfactual_bias``."""
    fitted: FmdPatch = trained.fitted  # type: ignore[assignment]
    spec, calib, model, v = job.spec, job.calib, job.model, plan.verdict
    gate = spec.gate
    audit, at_one = verdict_counterfactual_bias(
        trained.blob,
        trained.alpha.alpha,
        calib.x[v],
        job.log_m[v],
        cf.rows(v),
        attribute.groups[v],
        attribute.name,
        attribute.source,
        attribute.values,
        model,
        gate.bootstrap_draws,
        gate.confidence,
        spec.seed,
    )
    assert audit.served is not None and audit.change is not None
    cf_bias = {
        "raw": audit.raw.bias.model_dump(),
        "fair": audit.served.bias.model_dump(),
        "change": audit.change.model_dump(),
        "fair_at_alpha_1": round(at_one, 4),
        "alpha": trained.alpha.alpha,
        "rows": len(v),
    }
    section = {
        "attribute": attribute.name,
        "values": attribute.values,
        "counterfactuals": attribute.source,
        "counterfactuals_per_row": attribute.per_row,
        "counterfactual_bias": cf_bias
        | {
            "unit": "percent (change: points); basic bootstrap intervals over the verdict rows",
            "flip_share": {
                "raw": audit.raw.flip_share.model_dump(),
                "fair": audit.served.flip_share.model_dump(),
            },
            "groups": {
                g: {
                    "raw": audit.raw.groups[g].bias.model_dump(),
                    "fair": audit.served.groups[g].bias.model_dump(),
                }
                for g in audit.raw.groups
            },
        },
        "k": {
            "grid": fitted.grid,
            "chosen_fraction": fitted.chosen_fraction,
            "rule": "lowest out-of-fold counterfactual bias of the served answer at α = 1 on "
            f"the tuning rows, among Ks whose average-group accuracy falls by ≤ "
            f"{spec.fmd.max_avg_acc_drop_pp} points; 0 (no update) unless one lowers it",
            "curve": fitted.curve,
        },
        "folds": fitted.folds,
        "config": spec.fmd.model_dump(mode="json"),
        "top_harmful_rows": top_harmful(fitted, calib, plan, attribute, model),
    }
    return section, cf_bias


def top_harmful(
    fitted: FmdPatch,
    calib: CalibrationSet,
    plan: RowPlan,
    attribute: AuditAttribute,
    model: ModelConfig,
    count: int = TOP_HARMFUL,
) -> list[dict[str, Any]]:
    """The tuning rows of largest influence on the surrogate's counterfactual bias (mean over
    the folds that fitted them), by their 0-based row in the calibration file."""
    influence = fitted.influence
    order = [i for i in np.argsort(-np.nan_to_num(influence, nan=-np.inf)) if influence[i] > 0]
    rows = []
    for i in order[:count]:
        row = int(plan.tuning[i])
        rows.append(
            {
                "row": row,
                "influence": float(f"{influence[i]:.6g}"),
                "target": model.classes[int(calib.y[row])],
                "group": str(attribute.groups[row]),
            }
        )
    return rows
