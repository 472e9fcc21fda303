"""A label-free job (``method: "poisoner"``): one f_B training, two candidate patches, the gate
keeps one.

The Poisoner's biased model f_B is trained once per fold on the tuning rows' x and y
(``methods.poisoner.fit_biased_folds``); both serving modes are built from those fits:
``poisoner`` (tempered log f_B) and ``poisoner-eraser`` (the Eraser on f_B's predicted class b̂
as a pseudo bias label), as ``spec.poisoner.candidates`` asks. Each gets its own α and class
offset on the tuning rows (out of fold) and its own verdict from the gate on the verdict rows
(the exported graph); the job registers the one the gate prefers, with both verdicts in its
report:

- both validated: the better worst-group accuracy estimate on the verdict rows (ties: the
  better average-group accuracy, then the order of ``candidates``);
- one validated: that one;
- none: the better worst-group estimate, registered as *rejected* with both reasons.

A bias column, when the job has one, is for evaluation only: it never reaches f_B or the
Eraser, and it decides no row's part (the verdict split and the folds are stratified by the
target alone), so permuting it leaves the trained nets unchanged. It supplies the groups of the
α rule and of the gate, and the report's ``bias_discovery``. Without one, the groups are
**pseudo-groups** y × b̂: on tuning rows b̂ is the out-of-fold f_B's class, on verdict rows the
class of the served f_B ensemble (the fold nets, tempered), which no verdict row trained.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from patch_training.folds import RowPlan
from patch_training.jobs.pipeline import (
    Extra,
    JobRun,
    Judged,
    TrainedPatch,
    judge_served,
    limit_threads_for,
    register,
    row_plan,
    tune_and_export,
)
from patch_training.methods.base import MethodInput
from service.calibration.dataset import CalibrationSet
from service.jobs.spec import Candidate, PatchOutcome, TrainingJobSpec
from service.registry.models import REJECTED, VALIDATED

if TYPE_CHECKING:
    from patch_training.jobs.context import JobContext
    from patch_training.methods.poisoner import BiasedFold, PoisonerPatch
    from patch_training.nets.poisoned import BiasedModelConfig

log = logging.getLogger(__name__)

PSEUDO_PREFIX = "fB"  # pseudo-group values: "fB0", "fB1", ... (f_B's predicted class)


def pseudo_groups(pred: np.ndarray) -> np.ndarray:
    """Group values of f_B's predicted classes (−1, a row no f_B judged, stays "fB-1")."""
    return np.char.add(PSEUDO_PREFIX, np.asarray(pred).astype(str))


def label_free_plan(calib: CalibrationSet, spec: TrainingJobSpec) -> RowPlan:
    """Verdict rows and folds stratified by the target only: no bias column decides a row's part."""
    return row_plan(spec, calib.y, np.zeros(len(calib), dtype=np.int8))


def fit_candidates(
    data: MethodInput, config: BiasedModelConfig, ctx: JobContext
) -> tuple[list[BiasedFold], dict[str, PoisonerPatch]]:
    """f_B once per fold (progress stage ``train_biased``, one step per pass over the rows),
    then every candidate of ``spec.poisoner.candidates`` from those fits (the Eraser's epochs
    in stage ``train``). ``data.b`` is None: nothing here can read a bias column."""
    from patch_training.methods.poisoner import (
        Poisoner,
        PoisonerEraser,
        biased_passes,
        fit_biased_folds,
    )

    limit_threads_for(ctx)
    total = biased_passes(data, config)
    with ctx.progress.stage("train_biased", total, unit="pass") as advance:
        biased = fit_biased_folds(data, config, lambda *_: advance(1))
    fitted: dict[str, PoisonerPatch] = {}
    for kind in data.spec.poisoner.candidates:
        if kind == "poisoner":
            fitted[kind] = Poisoner(config).from_biased(data, biased)
        else:
            with ctx.progress.stage("train", data.epochs_budget, unit="epoch") as advance:
                fitted[kind] = PoisonerEraser(config).from_biased(
                    data, biased, lambda *_: advance(1)
                )
    return biased, fitted


def choose(judged: dict[str, Judged]) -> tuple[str, str]:
    """The kept candidate and why (see the module docstring)."""

    def estimate(kind: str, metric: str) -> float:
        return judged[kind].evidence.fair[metric].estimate

    def key(kind: str) -> tuple[float, float]:
        return estimate(kind, "worst_group_acc"), estimate(kind, "avg_group_acc")

    kinds = list(judged)  # in the order of spec.poisoner.candidates
    passed = [k for k in kinds if judged[k].verdict.passed]
    if len(kinds) == 1:
        verdict = "validated" if passed else "rejected"
        return kinds[0], f"{kinds[0]}: the only candidate built ({verdict})"
    worst = ", ".join(f"{k} {estimate(k, 'worst_group_acc'):.2f}" for k in kinds)
    if len(passed) == 1:
        other = ", ".join(k for k in kinds if k not in passed)
        return passed[0], f"{passed[0]}: the only candidate the gate validated ({other} rejected)"
    pool = passed or kinds
    best = max(pool, key=key)  # max keeps the first of equal keys: the candidates' order
    if passed:
        why = (
            f"{best}: every candidate validated; the better worst-group accuracy on the "
            f"verdict rows ({worst})"
        )
    else:
        why = (
            f"no candidate passed the gate; {best} is registered (rejected, never activated) "
            f"as the better worst-group accuracy on the verdict rows ({worst})"
        )
    return best, why


async def run_label_free(job: JobRun) -> tuple[list[PatchOutcome], RowPlan]:
    """The whole label-free job after the black-box query; one registered version."""
    from patch_training.methods.poisoner import out_of_fold_predictions, predict_pseudo_bias
    from patch_training.nets.poisoned import BiasedModelConfig

    spec, calib, log_m, ctx, timer = job.spec, job.calib, job.log_m, job.ctx, job.timer
    column = spec.bias[0] if spec.bias else None
    b_true = calib.bias[column] if column is not None else None
    plan = label_free_plan(calib, spec)
    t, v = plan.tuning, plan.verdict
    data = job.tuning_input(plan, None)
    config = BiasedModelConfig.from_job(spec)
    with timer("train"):
        biased, fitted = fit_candidates(data, config, ctx)
        pred_t = out_of_fold_predictions(len(t), biased)
        pred_v = predict_pseudo_bias(biased, calib.x[v])
        if b_true is not None:
            groups_t, groups_v = b_true[t], b_true[v]
        else:
            groups_t, groups_v = pseudo_groups(pred_t), pseudo_groups(pred_v)
        trained = {k: tune_and_export(f, data, groups_t) for k, f in fitted.items()}
    with timer("verdict"):
        judged = {
            k: judge_served(p, calib, log_m, groups_v, plan, data) for k, p in trained.items()
        }
    kept, why = choose(judged)
    log.info("label-free job keeps %s: %s", kept, why)
    extra = _extra(
        spec, column, calib.y, b_true, plan, biased, (pred_t, pred_v), trained, judged, (kept, why)
    )
    with timer("register"):
        outcome = await register(
            kept, data, column, calib, plan, trained[kept], judged[kept], ctx, extra
        )
    return [outcome], plan


def groups_note(column: str | None) -> str:
    if column is None:
        return (
            "pseudo-groups y × b̂ (b̂ = f_B's predicted class, values fB0, fB1, ...): the job "
            "had no bias column, so worst-group and average-group accuracy, EO bias and the "
            "gate are over groups f_B found, not over a protected attribute"
        )
    return (
        f"bias column {column!r}, used for evaluation only (α rule, gate, report): f_B and the "
        "patches were trained without it, and the row split is stratified by the target alone"
    )


def _extra(
    spec: TrainingJobSpec,
    column: str | None,
    y: np.ndarray,
    b_true: np.ndarray | None,
    plan: RowPlan,
    biased: list[BiasedFold],
    pred: tuple[np.ndarray, np.ndarray],
    trained: dict[str, TrainedPatch],
    judged: dict[str, Judged],
    choice: tuple[str, str],
) -> Extra:
    """The report's ``label_free`` section, the outcome's candidates and the stored reason;
    ``pred`` f_B's classes on the tuning rows (out of fold) and on the verdict rows."""
    (pred_t, pred_v), (kept, why) = pred, choice
    from patch_training.methods.poisoner import bias_discovery
    from patch_training.nets.poisoned import BiasedModelConfig, describe_config

    candidates = [
        Candidate(
            kind=k,
            status=VALIDATED if j.verdict.passed else REJECTED,
            reason=j.verdict.reason,
            alpha=trained[k].alpha.alpha,
            fair={m: iv.estimate for m, iv in j.evidence.fair.items()},
            kept=k == kept,
        )
        for k, j in judged.items()
    ]
    reason = judged[kept].verdict.reason
    if not any(j.verdict.passed for j in judged.values()) and len(judged) > 1:
        reason = "no candidate passed the gate — " + "; ".join(
            f"{c.kind}: {c.reason}" for c in candidates
        )
    y_t, y_v = y[plan.tuning], y[plan.verdict]
    b_t = None if b_true is None else b_true[plan.tuning]
    b_v = None if b_true is None else b_true[plan.verdict]
    discovery = {
        "tuning_out_of_fold": bias_discovery(y_t, pred_t, b_t).as_dict(),
        "verdict_served_ensemble": bias_discovery(y_v, pred_v, b_v).as_dict(),
        "note": "b̂ = f_B's predicted class; 'misclassified by f_B' is its bias-conflicting set"
        + ("" if b_true is not None else "; no bias column, so no precision, recall or agreement"),
    }
    config = BiasedModelConfig.from_job(spec)
    section: dict[str, Any] = {
        "groups": groups_note(column),
        "bias_labels_used_for_training": False,
        "kept": kept,
        "choice": why,
        "candidates": [c.model_dump() for c in candidates],
        "biased_model": {
            **describe_config(config),
            "temperatures": [bf.temperature for bf in biased],
            "folds": [bf.history.as_dict() for bf in biased],
        },
        "bias_discovery": discovery,
    }
    outcome = {"groups": groups_note(column), "candidates": candidates, "choice": why}
    return Extra(report={"label_free": section}, outcome=outcome, reason=reason)
