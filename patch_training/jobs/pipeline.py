"""A training job, whatever its method: calibration set → black-box answers → method fit →
α tuning → validation gate → ONNX export with a parity check → report → signed version →
activation (only when asked, and only when the gate passed).

The method (``patch_training.methods``) builds the net and its out-of-fold log-outputs;
everything else here is shared, so every kind of patch is judged, exported and registered the
same way. The version, its verdict and its report are written in one atomic registry write.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from patch_training.alpha import AlphaChoice, alpha_curve, choose_alpha
from patch_training.blackbox import query_log_probs
from patch_training.folds import make_folds
from patch_training.gate import judge
from patch_training.jobs.activation import activate
from patch_training.jobs.context import JobContext
from patch_training.jobs.report import report_dict, stored_report
from patch_training.methods import METHODS
from patch_training.methods.base import FittedPatch, Method, MethodInput
from service.calibration.dataset import CalibrationSet
from service.jobs.spec import JobResult, PatchOutcome, TrainingJobSpec
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


async def run_training(spec: TrainingJobSpec, calib: CalibrationSet, ctx: JobContext) -> JobResult:
    """Run the whole job for every bias column of ``spec``; see the module docstring."""
    model = ctx.model(spec.model)
    method = METHODS[spec.method]
    timer = _Timer()
    with timer("query"):
        log_m, cached = await _query(model, calib, ctx)
    outcomes, judged_rows = [], 0
    for column in spec.bias:
        b = calib.bias[column]
        folds = make_folds(calib.y, b, spec.folds, spec.holdout_fraction, spec.seed)
        data = MethodInput(calib.x, log_m, calib.y, b, folds, model, spec)
        with timer("train"):
            trained = _train(method, data, ctx)
        judged_rows = len(trained.fitted.judged)
        with timer("register"):
            outcomes.append(await _register(method, data, column, calib, trained, ctx))
    revision = await _activate(spec, model, outcomes, ctx) if spec.activate else None
    return JobResult(
        method=spec.method,
        calibration_set_id=calib.sha256,
        rows=len(calib),
        judged_rows=judged_rows,
        cached_outputs=cached,
        patches=outcomes,
        stack_revision=revision,
        timings_s=dict(timer),
    )


async def _query(
    model: ModelConfig, calib: CalibrationSet, ctx: JobContext
) -> tuple[np.ndarray, bool]:
    """The black box's log-probabilities for every row (cached), with a progress bar."""
    training = ctx.settings.training
    with ctx.progress.stage("query", len(calib), unit="rows") as advance:
        log_m, cached = await query_log_probs(
            model,
            calib.x,
            ctx.cache,
            training.query_batch_size,
            training.query_concurrency,
            advance,
        )
    log.info("black-box answers for %d rows (%s)", len(calib), "cached" if cached else "queried")
    return log_m, cached


def _train(method: Method, data: MethodInput, ctx: JobContext) -> TrainedPatch:
    """The method's fit, then the shared steps that need no Redis: α, export, parity."""
    from patch_training.export.torch_onnx import check_parity, export_patch
    from patch_training.nets import limit_threads

    limit_threads(ctx.settings.training.torch_threads)
    with ctx.progress.stage("train", data.epochs_budget, unit="epoch") as advance:
        fitted = method.fit(data, on_epoch=lambda *_: advance(1))
    j = fitted.judged
    curve = alpha_curve(
        data.log_m[j], fitted.out_of_fold[j], data.y[j], data.b[j], data.spec.alpha_grid
    )
    blob = export_patch(fitted.served, data.model.input.shape)
    parity = check_parity(fitted.served, blob, data.x[j][:PARITY_ROWS])
    choice = choose_alpha(curve, data.spec.gate.max_avg_acc_drop_pp)
    return TrainedPatch(fitted, choice, blob, parity)


async def _register(
    method: Method,
    data: MethodInput,
    column: str,
    calib: CalibrationSet,
    trained: TrainedPatch,
    ctx: JobContext,
) -> PatchOutcome:
    spec, model, choice = data.spec, data.model, trained.alpha
    name = spec.patch_name(column)
    verdict = judge(choice.at(0.0), choice.at(choice.alpha), spec.gate)
    training = _training_record(spec, column, trained, ctx)
    report = report_dict(
        patch=name,
        bias=column,
        choice=choice,
        verdict=verdict,
        training=training,
        calibration={"sha256": calib.sha256, "rows": len(calib), "format": calib.format},
    )
    metrics = {
        k: {m: v for m, v in report[k].items() if m != "group_acc"}
        for k in ("raw", "fair", "alpha_1")
    }
    status = VALIDATED if verdict.passed else REJECTED
    manifest = await ctx.registry.register_version(
        name,
        PatchSpec(
            kind=method.kind,
            model=model.name,
            classes=list(model.classes),
            input_shape=list(model.input.shape),
            default_alpha=choice.alpha,
            training_config=training,
            calibration_set_id=calib.sha256,
            validation_metrics={"out_of_fold": metrics, "gate": report["gate"]},
        ),
        trained.blob,
        status=VersionStatus(status=status, reason=verdict.reason),
        report=stored_report(report),
        job_id=ctx.job_id,
    )
    log.info("registered %s v%d: %s (%s)", name, manifest.version, status, verdict.reason)
    return PatchOutcome(
        name=name,
        version=manifest.version,
        bias=column,
        status=status,
        reason=verdict.reason,
        alpha=choice.alpha,
        out_of_fold=metrics,
    )


def _training_record(
    spec: TrainingJobSpec, column: str, trained: TrainedPatch, ctx: JobContext
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
        "judged_rows": len(trained.fitted.judged),
        "onnx_parity_max_abs_diff": trained.parity_max_abs_diff,
    }


async def _activate(
    spec: TrainingJobSpec, model: ModelConfig, outcomes: list[PatchOutcome], ctx: JobContext
) -> int | None:
    """Put every validated patch on the stack; rejected ones stay registered, inactive."""
    passed = [o for o in outcomes if o.status == VALIDATED]
    if not passed:
        log.warning("activation skipped: no patch passed the validation gate")
        return None
    entries = [StackEntry(patch=o.name, version=o.version, alpha=o.alpha) for o in passed]
    stack = await activate(ctx.registry, model.name, entries, f"training job {ctx.job_id}")
    for outcome in passed:
        outcome.activated = True
    return stack.revision
