"""A training job, whatever its method: calibration set → black-box answers → rows split into
tuning and verdict parts → method fit on the tuning rows → α tuning (tuning rows, out of fold)
→ ONNX export with a parity check → the validation gate on the verdict rows (the exported graph,
bootstrap intervals) → report → signed version → activation (only when asked, only if the gate
passed).

The method (``patch_training.methods``) builds the net and its out-of-fold log-outputs and never
sees a verdict row; everything else here is shared, so every kind of patch is judged, exported
and registered the same way. The version, its verdict and its report are written in one atomic
registry write.

A label-free method (``spec.label_free``: the Poisoner) takes its own route after the query
(``jobs.label_free``): rows split by target only, two candidate patches from one f_B training,
each through the shared α, export and gate steps here, one registered. FMD
(``jobs.fmd``) adds every row's counterfactuals and the black box's answers on them, then
runs the shared steps per attribute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patch_training.alpha import AlphaChoice, alpha_curve, choose_alpha
from patch_training.blackbox import Answers, query_log_probs
from patch_training.evidence import paired_evidence, served_log_bias
from patch_training.folds import RowPlan, plan_rows
from patch_training.gate import Verdict, judge
from patch_training.jobs.activation import activate
from patch_training.jobs.context import JobContext
from patch_training.jobs.report import RowCounts, report_dict, stored_report
from patch_training.methods import METHODS
from patch_training.methods.base import Counterfactuals, FittedPatch, Method, MethodInput
from patch_training.metrics import GroupReport, group_report
from service.calibration.dataset import CalibrationSet
from service.eraser_math import fair_log_probs
from service.jobs.spec import Evidence, JobResult, PatchOutcome, TrainingJobSpec
from service.registry.models import REJECTED, VALIDATED, PatchSpec, StackEntry, VersionStatus
from service.settings import ModelConfig

log = logging.getLogger(__name__)

PARITY_ROWS = 512  # calibration rows the exported graph is checked on


class _Timer(dict[str, float]):
    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 3)


@dataclass(frozen=True)
class TrainedPatch:
    """A fitted patch after the shared steps: α chosen, exported, parity-checked."""

    fitted: FittedPatch
    alpha: AlphaChoice
    blob: bytes
    parity_max_abs_diff: float
    patch_shift: list[float] | None = None  # δ/α baked into the exported graph (class offset)
    fp16_parity_max_abs_diff: float | None = None  # export.fp16: |fp16 − fp32| on parity rows


@dataclass(frozen=True)
class Judged:
    """The gate's verdict on the served artifact, the evidence, and α = 1 for the report."""

    verdict: Verdict
    evidence: Evidence
    at_alpha_1: GroupReport


@dataclass(frozen=True)
class Extra:
    """What a method adds to a registered version beyond the shared record (label-free jobs:
    the candidates, the choice, f_B's curves, what the groups were)."""

    report: dict[str, Any] = field(default_factory=dict)  # extra report sections
    outcome: dict[str, Any] = field(default_factory=dict)  # extra PatchOutcome fields
    reason: str | None = None  # the stored status reason, when not the verdict's own


def row_plan(spec: TrainingJobSpec, y: np.ndarray, strata: np.ndarray) -> RowPlan:
    """Verdict rows and folds as ``spec`` asks, stratified by the target ``y`` and ``strata``."""
    s = spec
    return plan_rows(y, strata, s.verdict_fraction, s.folds, s.holdout_fraction, s.seed)


@dataclass(frozen=True)
class JobRun:
    """What every method's flow starts from once the black box has answered every row."""

    spec: TrainingJobSpec
    calib: CalibrationSet
    log_m: np.ndarray  # float64 [N, K]: the black box's log-probabilities on every row
    model: ModelConfig
    ctx: JobContext
    timer: _Timer

    def plan(self, strata: np.ndarray) -> RowPlan:
        """Verdict rows and folds, stratified by the target and ``strata`` [N]."""
        return row_plan(self.spec, self.calib.y, strata)

    def tuning_input(
        self, plan: RowPlan, b: np.ndarray | None, counterfactual: Counterfactuals | None = None
    ) -> MethodInput:
        """The method's input: the tuning rows only (``b`` and ``counterfactual`` cover all N
        rows; ``b`` None for a label-free method)."""
        t = plan.tuning
        return MethodInput(
            self.calib.x[t],
            self.log_m[t],
            self.calib.y[t],
            None if b is None else b[t],
            plan.folds,
            self.model,
            self.spec,
            None if counterfactual is None else counterfactual.rows(t),
        )


Outcomes = tuple[list[PatchOutcome], RowPlan | None]  # a flow's patches and its last row plan


async def run_training(spec: TrainingJobSpec, calib: CalibrationSet, ctx: JobContext) -> JobResult:
    """Run the whole job for every bias column of ``spec``; see the module docstring."""
    model = ctx.model(spec.model)
    timer = _Timer()
    with timer("query"):
        answers = await _query(model, calib, ctx)
    job = JobRun(spec, calib, answers.log_p, model, ctx, timer)
    if spec.label_free:
        from patch_training.jobs.label_free import run_label_free

        outcomes, plan = await run_label_free(job)
    elif spec.method == "fmd":
        from patch_training.jobs.fmd import run_fmd

        outcomes, plan = await run_fmd(job)
    else:
        method = METHODS[spec.method]
        outcomes, plan = await per_bias_column(job, lambda c: patch_for_column(job, method, c))
    revision = await _activate(spec, model, outcomes, ctx) if spec.activate else None
    return JobResult(
        method=spec.method,
        calibration_set_id=calib.sha256,
        rows=len(calib),
        tuning_rows=len(plan.tuning) if plan else 0,
        verdict_rows=len(plan.verdict) if plan else 0,
        cached_outputs=answers.cached,
        cache_entry_refused=answers.refused,
        patches=outcomes,
        stack_revision=revision,
        timings_s=dict(timer),
    )


async def per_bias_column(
    job: JobRun, patch_for: Callable[[str], Awaitable[tuple[PatchOutcome, RowPlan]]]
) -> Outcomes:
    """One patch per bias column of the spec, in order: ``patch_for(column)``."""
    outcomes, plan = [], None
    for column in job.spec.bias:
        outcome, plan = await patch_for(column)
        outcomes.append(outcome)
    return outcomes, plan


async def patch_for_column(
    job: JobRun,
    method: Method,
    column: str,
    counterfactual: Counterfactuals | None = None,
    epochs_per_fold: int | None = None,
    extra: Callable[[TrainedPatch, RowPlan], Extra] | None = None,
) -> tuple[PatchOutcome, RowPlan]:
    """One patch trained on ``column``'s groups: split, fit on the tuning rows, the shared steps,
    the gate, registration. ``epochs_per_fold`` sizes the progress bar when the method's epochs
    are not the spec's; ``extra`` adds the method's report sections (timed as the verdict)."""
    b = job.calib.bias[column]
    plan = job.plan(b)
    data = job.tuning_input(plan, b, counterfactual)
    timer, ctx, calib = job.timer, job.ctx, job.calib
    with timer("train"):
        limit_threads_for(ctx)
        epochs = data.spec.epochs if epochs_per_fold is None else epochs_per_fold
        budget = epochs * len(plan.folds)  # data.epochs_budget for the spec's own epochs
        with ctx.progress.stage("train", budget, unit="epoch") as advance:
            fitted = method.fit(data, on_epoch=lambda *_: advance(1))
        trained = tune_and_export(fitted, data, b[plan.tuning])
    with timer("verdict"):
        judged = judge_served(trained, calib, job.log_m, b[plan.verdict], plan, data)
        more = extra(trained, plan) if extra is not None else None
    with timer("register"):
        outcome = await register(method.kind, data, column, calib, plan, trained, judged, ctx, more)
    return outcome, plan


async def query_answers(model: ModelConfig, x: np.ndarray, ctx: JobContext, stage: str) -> Answers:
    """The black box's log-probabilities on rows ``x`` (cached), with a progress bar ``stage``."""
    training = ctx.settings.training
    with ctx.progress.stage(stage, len(x), unit="rows") as advance:
        return await query_log_probs(
            model, x, ctx.cache, training.query_batch_size, training.query_concurrency, advance
        )


async def _query(model: ModelConfig, calib: CalibrationSet, ctx: JobContext) -> Answers:
    """The black box's log-probabilities for every row (cached), with a progress bar."""
    answers = await query_answers(model, calib.x, ctx, "query")
    how = "cached" if answers.cached else "queried"
    if answers.refused is not None:
        how = f"queried again: the cached entry was refused, {answers.refused}"
    log.info("black-box answers for %d rows (%s)", len(calib), how)
    return answers


def limit_threads_for(ctx: JobContext) -> None:
    """PyTorch threads per job (``training.torch_threads``), before any fit."""
    from patch_training.nets import limit_threads

    limit_threads(ctx.settings.training.torch_threads)


def tune_and_export(fitted: FittedPatch, data: MethodInput, groups: np.ndarray) -> TrainedPatch:
    """The shared steps after a method's fit that need no Redis: α (and the class offset) on
    the judged tuning rows with ``groups`` [len(tuning)] as their groups, export, parity."""
    from patch_training.export.torch_onnx import check_parity, export_patch
    from patch_training.nets import ShiftedPatch

    j, spec = fitted.judged, data.spec
    curve = alpha_curve(
        data.log_m[j], fitted.out_of_fold[j], data.y[j], np.asarray(groups)[j], spec.alpha_grid,
        spec.gate, spec.seed, spec.class_offset,
    )  # fmt: skip
    choice = choose_alpha(curve, spec.gate)
    shift = choice.patch_shift  # the class offset chosen with α, baked into the served graph
    served = fitted.served if shift is None else ShiftedPatch(fitted.served, shift.tolist())
    blob = export_patch(served, data.model.input.shape)
    parity = check_parity(served, blob, data.x[j][:PARITY_ROWS])
    half = None
    if spec.export.fp16:  # the fp16 graph is what the gate then judges and the registry stores
        from patch_training.export.fp16 import export_fp16

        blob, half = export_fp16(blob, data.x[j][:PARITY_ROWS])
    baked = None if shift is None else [float(v) for v in shift]
    return TrainedPatch(fitted, choice, blob, parity, baked, half)


def judge_served(
    trained: TrainedPatch,
    calib: CalibrationSet,
    log_m: np.ndarray,
    b_verdict: np.ndarray,
    plan: RowPlan,
    data: MethodInput,
) -> Judged:
    """The exported graph, in ONNX Runtime, on the verdict rows: what would be served;
    ``b_verdict`` the verdict rows' groups (a bias column, or pseudo-groups)."""
    v, spec = plan.verdict, data.spec
    log_g = served_log_bias(trained.blob, calib.x[v], data.model)
    raw = np.argmax(log_m[v], axis=1)
    fair = np.argmax(fair_log_probs(log_m[v], [log_g], [trained.alpha.alpha]), axis=1)
    gate = spec.gate
    evidence = paired_evidence(
        calib.y[v], b_verdict, raw, fair, gate.bootstrap_draws, gate.confidence, spec.seed
    )
    at_one = np.argmax(fair_log_probs(log_m[v], [log_g], [1.0]), axis=1)
    return Judged(judge(evidence, gate), evidence, group_report(calib.y[v], at_one, b_verdict))


async def register(
    kind: str,
    data: MethodInput,
    column: str | None,
    calib: CalibrationSet,
    plan: RowPlan,
    trained: TrainedPatch,
    judged: Judged,
    ctx: JobContext,
    extra: Extra | None = None,
) -> PatchOutcome:
    """One signed version with its report and verdict, in one atomic registry write."""
    extra = extra or Extra()
    spec, model, choice, verdict = data.spec, data.model, trained.alpha, judged.verdict
    name = spec.patch_name(column)
    training = _training_record(spec, column, trained, ctx)
    rows = RowCounts(len(calib), len(plan.tuning), len(plan.verdict), len(plan.folds))
    report = (
        report_dict(
            patch=name,
            bias=column,
            choice=choice,
            verdict=verdict,
            evidence=judged.evidence,
            at_alpha_1=judged.at_alpha_1,
            rows=rows,
            training=training,
            calibration={"sha256": calib.sha256, "rows": len(calib), "format": calib.format},
        )
        | extra.report
    )
    reason = extra.reason or verdict.reason
    tuning = {k: choice.at(a).as_percent() for k, a in _TUNING_POINTS.items()}
    tuning["fair"] = choice.chosen.as_percent()
    status = VALIDATED if verdict.passed else REJECTED
    manifest = await ctx.registry.register_version(
        name,
        PatchSpec(
            kind=kind,
            model=model.name,
            classes=list(model.classes),
            input_shape=list(model.input.shape),
            default_alpha=choice.alpha,
            training_config=training,
            calibration_set_id=calib.sha256,
            validation_metrics={"verdict": report["verdict"], "tuning": tuning},
        ),
        trained.blob,
        status=VersionStatus(status=status, reason=reason),
        report=stored_report(report),
        job_id=ctx.job_id,
    )
    log.info("registered %s v%d: %s (%s)", name, manifest.version, status, reason)
    return PatchOutcome(
        name=name,
        version=manifest.version,
        bias=column,
        kind=kind,
        status=status,
        reason=reason,
        alpha=choice.alpha,
        evidence=judged.evidence,
        rows_per_group_needed=verdict.rows_per_group_needed,
        tuning=tuning,
        **extra.outcome,
    )


_TUNING_POINTS = {"raw": 0.0, "alpha_1": 1.0}  # and "fair": the chosen α


def _training_record(
    spec: TrainingJobSpec, column: str | None, trained: TrainedPatch, ctx: JobContext
) -> dict[str, object]:
    """What the signed manifest says about how the patch was made (enough to rebuild it)."""
    return {
        "job": spec.model_dump(mode="json", exclude={"activate"}),
        "job_id": ctx.job_id,
        "bias_column": column,
        "net": trained.fitted.description,
        "fit": [
            {
                "best_epoch": fit.best_epoch,
                "epochs_run": fit.epochs_run,
                "best_val_kl": fit.best_val_kl,
                "device": fit.device,
                "seconds": round(fit.seconds, 3),
            }
            for fit in trained.fitted.fits
        ],
        "tuning_rows_judged_out_of_fold": len(trained.fitted.judged),
        "class_offset": {
            "mode": spec.class_offset,
            "offset": list(trained.alpha.offset) if trained.alpha.offset is not None else None,
            "baked_shift": trained.patch_shift,
        },
        "onnx_parity_max_abs_diff": trained.parity_max_abs_diff,
        "export": spec.export.model_dump()
        | {"fp16_parity_max_abs_diff": trained.fp16_parity_max_abs_diff},
    }


async def _activate(
    spec: TrainingJobSpec, model: ModelConfig, outcomes: list[PatchOutcome], ctx: JobContext
) -> int | None:
    """Put the validated patch on the stack; rejected ones stay registered, inactive.

    Each patch of a job with several bias columns was tuned and gated alone, and two patches at
    their own α can overcorrect together (each carries part of the model's class evidence: the
    quality benchmark's replayed COMPAS race + sex stack fell to 46 % accuracy). Until a stack
    is judged as a whole, a job activates only its validated patch with the best worst-group
    estimate on its verdict rows; the others stay registered for an operator to stack."""
    passed = [o for o in outcomes if o.status == VALIDATED]
    if not passed:
        log.warning("activation skipped: no patch passed the validation gate")
        return None
    best = max(passed, key=lambda o: o.evidence.fair["worst_group_acc"].estimate)
    entry = StackEntry(patch=best.name, version=best.version, alpha=best.alpha)
    stack = await activate(ctx.registry, model.name, [entry], f"training job {ctx.job_id}")
    best.activated = True
    for outcome in passed:
        if outcome is not best:
            outcome.not_activated = (
                f"validated alone, not stacked with {best.name}: a job's patches are never "
                "judged as a stack; stack them yourself after checking the stack on held-out rows"
            )
            log.warning(
                "patch %s validated but not stacked: %s", outcome.name, outcome.not_activated
            )
    return stack.revision
