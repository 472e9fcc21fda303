"""The ``distill`` job: calibration set → black-box answers → Eraser patch → signed version.

Steps (issue #3): query the black box (cached), Eq. 17 targets, fit G (Eq. 18) per cross-fitting
fold with early stopping on the fold's held-out rows, tune α on every row out of fold, export
the fold nets as one ONNX graph with a parity check, write the
report, register the version with the gate's verdict — all in one atomic registry write — and
activate it only when asked and only when the gate passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from patch_training.alpha import DEFAULT_GRID
from patch_training.blackbox import query_log_probs
from patch_training.calibration import CalibrationSet
from patch_training.gate import judge
from patch_training.holdout import Holdout, make_folds
from patch_training.jobs.activation import activate
from patch_training.jobs.context import JobContext
from patch_training.jobs.report import report_dict, stored_report
from patch_training.jobs.spec import DistillJobSpec, DistillResult, PatchOutcome
from patch_training.methods.eraser import EraserOptions, EraserPatch, train_eraser_patch
from patch_training.nets import FitConfig, limit_threads
from service.registry.models import REJECTED, VALIDATED, PatchSpec, StackEntry, VersionStatus
from service.settings import ModelConfig

log = logging.getLogger(__name__)


class _Timer(dict[str, float]):
    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 3)


async def run_distill(
    spec: DistillJobSpec, calib: CalibrationSet, ctx: JobContext
) -> DistillResult:
    """Run the whole job for every bias column of ``spec``; see the module docstring."""
    model = ctx.model(spec.model)
    timer = _Timer()
    training = ctx.settings.training
    with timer("query"), ctx.progress.stage("query", len(calib), unit="rows") as advance:
        log_m, cached = await query_log_probs(
            model,
            calib.x,
            ctx.cache,
            training.query_batch_size,
            training.query_concurrency,
            advance,
        )
    log.info("black-box answers for %d rows (%s)", len(calib), "cached" if cached else "queried")
    outcomes, holdout_rows = [], 0
    for column in spec.bias:
        b = calib.bias[column]
        folds = make_folds(calib.y, b, spec.folds, spec.holdout_fraction, spec.seed)
        with timer("train"):
            patch = _train(spec, calib, log_m, b, folds, model, ctx)
        holdout_rows = patch.judged_rows
        with timer("register"):
            outcomes.append(await _register(spec, column, calib, patch, model, ctx))
    revision = await _activate(spec, model, outcomes, ctx) if spec.activate else None
    return DistillResult(
        calibration_set_id=calib.sha256,
        rows=len(calib),
        holdout_rows=holdout_rows,
        cached_outputs=cached,
        patches=outcomes,
        stack_revision=revision,
        timings_s=dict(timer),
    )


def _train(
    spec: DistillJobSpec,
    calib: CalibrationSet,
    log_m: np.ndarray,
    b: np.ndarray,
    folds: list[Holdout],
    model: ModelConfig,
    ctx: JobContext,
) -> EraserPatch:
    fit = FitConfig(
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        lr=spec.lr,
        patience=spec.patience,
        seed=spec.seed,
        device=spec.device,
    )
    opts = EraserOptions(
        fit=fit,
        arch=spec.arch,
        hidden=tuple(spec.hidden),
        alpha_grid=tuple(spec.alpha_grid or DEFAULT_GRID),
        max_avg_acc_drop_pp=spec.gate.max_avg_acc_drop_pp,
    )
    limit_threads(ctx.settings.training.torch_threads)
    with ctx.progress.stage("train", spec.epochs * len(folds), unit="epoch") as advance:
        return train_eraser_patch(
            calib.x, log_m, calib.y, b, folds, model, opts, on_epoch=lambda *_: advance(1)
        )


async def _register(
    spec: DistillJobSpec,
    column: str,
    calib: CalibrationSet,
    patch: EraserPatch,
    model: ModelConfig,
    ctx: JobContext,
) -> PatchOutcome:
    name = spec.patch_name(column)
    choice = patch.alpha
    verdict = judge(choice.at(0.0), choice.at(choice.alpha), spec.gate)
    training = _training_record(spec, column, patch, ctx)
    report = report_dict(
        patch=name,
        bias=column,
        choice=choice,
        verdict=verdict,
        training=training,
        calibration={"sha256": calib.sha256, "rows": len(calib), "format": calib.format},
    )
    holdout = {k: report[k] for k in ("raw", "fair", "alpha_1")}
    metrics = {k: {m: v for m, v in d.items() if m != "group_acc"} for k, d in holdout.items()}
    manifest = await ctx.registry.register_version(
        name,
        PatchSpec(
            kind="eraser",
            model=model.name,
            classes=list(model.classes),
            input_shape=list(model.input.shape),
            default_alpha=choice.alpha,
            training_config=training,
            calibration_set_id=calib.sha256,
            validation_metrics={"holdout": metrics, "gate": report["gate"]},
        ),
        patch.blob,
        status=VersionStatus(
            status=VALIDATED if verdict.passed else REJECTED, reason=verdict.reason
        ),
        report=stored_report(report),
        job_id=ctx.job_id,
    )
    log.info("registered %s v%d: %s (%s)", name, manifest.version, verdict.passed, verdict.reason)
    return PatchOutcome(
        name=name,
        version=manifest.version,
        bias=column,
        status=VALIDATED if verdict.passed else REJECTED,
        reason=verdict.reason,
        alpha=choice.alpha,
        holdout=metrics,
    )


def _training_record(
    spec: DistillJobSpec, column: str, patch: EraserPatch, ctx: JobContext
) -> dict[str, object]:
    """What the signed manifest says about how the patch was made (enough to rebuild it)."""
    return {
        "job": spec.model_dump(mode="json", exclude={"activate"}),
        "job_id": ctx.job_id,
        "bias_column": column,
        "net": patch.net_description,
        "fit": [
            {
                "best_epoch": fit.best_epoch,
                "epochs_run": fit.epochs_run,
                "best_val_kl": fit.best_val_kl,
                "device": fit.device,
                "seconds": round(fit.seconds, 3),
            }
            for fit in patch.fits
        ],
        "judged_rows": patch.judged_rows,
        "onnx_parity_max_abs_diff": patch.parity_max_abs_diff,
    }


async def _activate(
    spec: DistillJobSpec, model: ModelConfig, outcomes: list[PatchOutcome], ctx: JobContext
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
