"""A label-free training job (``method: "poisoner"``) in process, against the stand-in black box
over HTTP and a real Redis: one f_B training, two candidate patches, the gate keeps one; the
bias column, when given, is for evaluation only."""

from __future__ import annotations

import dataclasses

import numpy as np
import orjson
import pytest

from blackbox.data import BIAS, TARGET
from patch_training.jobs.context import JobContext
from patch_training.jobs.label_free import choose, label_free_plan
from patch_training.jobs.pipeline import Judged, run_training
from patch_training.jobs.progress import JobProgress
from patch_training.methods.base import MethodInput
from patch_training.metrics import GroupReport
from service.calibration.dataset import CalibrationSet
from service.calibration.loader import load_calibration
from service.errors import InvalidCalibrationSet
from service.jobs.spec import Evidence, Interval, TrainingJobSpec
from tests.patch_training.jobs.conftest import spec

ALWAYS_PASS = {"min_bias_reduction_pp": -100.0, "max_avg_acc_drop_pp": 100.0,
               "max_acc_drop_pp": 100.0}  # fmt: skip
NEVER_PASS = {"min_bias_reduction_pp": 100.0}
FAST = {"steps": 60, "batch_size": 32}  # a few passes of f_B per fold: about a second a job


def poisoner_spec(**overrides: object) -> TrainingJobSpec:
    fields: dict = {"method": "poisoner", "bias": [], "poisoner": FAST, "epochs": 20}
    return spec(**(fields | overrides))


def without_bias(calibration: CalibrationSet) -> CalibrationSet:
    return dataclasses.replace(calibration, bias={})


# --- the spec and the upload (fast) ---------------------------------------------------------


def test_poisoner_spec_needs_no_bias_column_and_takes_at_most_one() -> None:
    label_free = TrainingJobSpec.model_validate({"method": "poisoner", "model": "m", "target": "t"})
    assert label_free.bias == [] and label_free.label_free
    assert label_free.patch_name(None) == "m-poisoner"
    assert label_free.poisoner.candidates == ["poisoner", "poisoner-eraser"]
    assert label_free.poisoner.p == 10.0 and label_free.poisoner.loss == "poison"
    with pytest.raises(ValueError, match="at most one bias column"):
        TrainingJobSpec.model_validate(
            {"method": "poisoner", "model": "m", "target": "t", "bias": ["a", "b"]}
        )
    with pytest.raises(ValueError, match="needs at least one bias column"):
        TrainingJobSpec.model_validate({"model": "m", "target": "t"})
    with pytest.raises(ValueError, match="cross-fitting"):
        TrainingJobSpec.model_validate(
            {"method": "poisoner", "model": "m", "target": "t", "folds": 1}
        )
    one_mode = {"candidates": ["poisoner"]}
    assert (
        TrainingJobSpec.model_validate(
            {"method": "poisoner", "model": "m", "target": "t", "folds": 1, "poisoner": one_mode}
        ).folds
        == 1
    )


async def test_a_calibration_file_without_a_bias_column_is_accepted_for_the_poisoner_only(
    ctx: JobContext, calibration_csv: bytes
) -> None:
    from service.calibration.intake import check_upload

    lines = calibration_csv.decode().splitlines()
    no_bias = "\n".join(line.rsplit(",", 1)[0] for line in lines).encode() + b"\n"
    model, training = ctx.model("compas"), ctx.settings.training
    job = TrainingJobSpec.model_validate(
        {"method": "poisoner", "model": "compas", "target": TARGET}
    )
    calib, meta = check_upload(no_bias, "calib.csv", model, job, training)
    assert calib.bias == {} and meta.bias == [] and meta.rows == len(lines) - 1
    with pytest.raises(InvalidCalibrationSet, match="at least one bias column"):
        load_calibration(no_bias, model, TARGET, [], 100_000, "calib.csv")


# --- choosing between the candidates (fast) -------------------------------------------------


def _judged(passed: bool, worst: float, avg: float = 60.0) -> Judged:
    from patch_training.gate import Verdict

    iv = {m: Interval(estimate=v, low=v, high=v) for m, v in
          {"worst_group_acc": worst, "avg_group_acc": avg, "eo_bias": 5.0,
           "accuracy": 60.0}.items()}  # fmt: skip
    evidence = Evidence(rows=10, confidence=0.9, draws=100, raw=iv, fair=iv, change=iv,
                        groups={}, group_rows={})  # fmt: skip
    report = GroupReport(0.6, 0.5, 0.05, 0.6, {}, 1)
    return Judged(Verdict(passed, "validated" if passed else "bias not reduced"), evidence, report)


def test_the_job_keeps_the_candidate_its_gate_prefers() -> None:
    both = {"poisoner": _judged(True, 40.0), "poisoner-eraser": _judged(True, 48.0)}
    assert choose(both)[0] == "poisoner-eraser" and "worst-group" in choose(both)[1]
    one = {"poisoner": _judged(True, 40.0), "poisoner-eraser": _judged(False, 48.0)}
    kept, why = choose(one)
    assert kept == "poisoner" and "only candidate the gate validated" in why
    none = {"poisoner": _judged(False, 45.0), "poisoner-eraser": _judged(False, 41.0)}
    kept, why = choose(none)
    assert kept == "poisoner" and why.startswith("no candidate passed the gate")
    tie = {"poisoner": _judged(True, 45.0, 60.0), "poisoner-eraser": _judged(True, 45.0, 61.0)}
    assert choose(tie)[0] == "poisoner-eraser"  # ties: the better average-group accuracy


async def test_the_row_plan_ignores_the_bias_column(calibration: CalibrationSet) -> None:
    job = poisoner_spec(bias=[BIAS])
    plan = label_free_plan(calibration, job)
    shuffled = dataclasses.replace(
        calibration, bias={BIAS: np.random.default_rng(1).permutation(calibration.bias[BIAS])}
    )
    again = label_free_plan(shuffled, job)
    np.testing.assert_array_equal(plan.verdict, again.verdict)
    assert all(np.array_equal(a.fit, b.fit) for a, b in zip(plan.folds, again.folds, strict=True))


# --- whole jobs (slow) ----------------------------------------------------------------------


@pytest.mark.slow
async def test_label_free_job_registers_the_kept_patch_with_a_pseudo_group_report(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    published: list[dict] = []
    progress = JobProgress(publish=published.append, show_bars=False, min_interval_s=0.0)
    job_ctx = dataclasses.replace(ctx, progress=progress)
    result = await run_training(poisoner_spec(), without_bias(calibration), job_ctx)
    [outcome] = result.patches
    assert result.method == "poisoner" and outcome.name == "compas-poisoner"
    assert outcome.bias is None and "pseudo-groups" in (outcome.groups or "")
    assert {c.kind for c in outcome.candidates} == {"poisoner", "poisoner-eraser"}
    [kept] = [c for c in outcome.candidates if c.kept]
    assert outcome.kind == kept.kind and outcome.alpha == kept.alpha and outcome.choice
    # the gate judged pseudo-groups y × b̂: group names carry f_B's classes
    assert set(outcome.evidence.group_rows) <= {f"y={y},b=fB{c}" for y in (0, 1) for c in (0, 1)}
    manifest = await ctx.registry.get_manifest(outcome.name, outcome.version)
    assert manifest.kind == kept.kind
    assert manifest.training_config["net"]["biased_model"]["bias_labels_used"] is False
    assert manifest.training_config["bias_column"] is None
    report = await ctx.registry.get_report(outcome.name, outcome.version)
    body = orjson.loads(report.json_bytes)
    section = body["label_free"]
    assert body["bias"] is None and "pseudo-groups" in section["groups"]
    assert section["kept"] == kept.kind and len(section["candidates"]) == 2
    folds = section["biased_model"]["folds"]
    assert len(folds) == 4 and all(len(f["loss"]) == len(f["poisoned_share"]) > 0 for f in folds)
    discovery = section["bias_discovery"]["tuning_out_of_fold"]
    assert discovery["misclassified_pct"] >= 0 and discovery["precision_pct"] is None
    assert report.png is not None and report.png.startswith(b"\x89PNG")
    # progress: the f_B stage's budget is exactly its passes, then the Eraser's epochs
    stages = {p["stage"]: p for p in published}
    assert {"query", "train_biased", "train"} <= set(stages)
    biased = [p for p in published if p["stage"] == "train_biased"]
    assert max(p["done"] for p in biased) == biased[0]["total"]  # the bar ends where it said
    assert all(0.0 <= p["fraction"] <= 1.0 for p in published)


@pytest.mark.slow
async def test_a_bias_column_judges_the_patch_but_never_reaches_training(
    ctx: JobContext, calibration: CalibrationSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    import patch_training.methods.poisoner as poisoner

    seen: list[MethodInput] = []
    trained: list[np.ndarray] = []
    original = poisoner.fit_biased_folds

    def recording(data, config, on_epoch=None):  # type: ignore[no-untyped-def]
        seen.append(data)
        folds = original(data, config, on_epoch)
        trained.append(np.concatenate([bf.log_p_val for bf in folds]))
        return folds

    monkeypatch.setattr(poisoner, "fit_biased_folds", recording)
    only_poisoner = FAST | {"candidates": ["poisoner"]}
    job = poisoner_spec(bias=[BIAS], class_offset="none", poisoner=only_poisoner)
    first = await run_training(job.model_copy(update={"name": "a"}), calibration, ctx)
    shuffled = dataclasses.replace(
        calibration, bias={BIAS: np.random.default_rng(7).permutation(calibration.bias[BIAS])}
    )
    second = await run_training(job.model_copy(update={"name": "b"}), shuffled, ctx)
    assert all(d.b is None for d in seen)  # the method's input carries no bias column
    np.testing.assert_array_equal(trained[0], trained[1])  # f_B identical under a permutation
    blobs = [await ctx.registry.get_blob(await ctx.registry.get_manifest(n, 1)) for n in ("a", "b")]
    assert blobs[0] == blobs[1]  # the served patch too (no class offset baked in)
    [outcome] = first.patches
    assert outcome.bias == BIAS and "evaluation only" in (outcome.groups or "")
    assert set(outcome.evidence.group_rows) <= {
        f"y={y},b={r}" for y in (0, 1) for r in np.unique(calibration.bias[BIAS])
    }
    body = orjson.loads((await ctx.registry.get_report("a", 1)).json_bytes)
    discovery = body["label_free"]["bias_discovery"]["tuning_out_of_fold"]
    assert 0 <= discovery["precision_pct"] <= 100 and 0 <= discovery["agreement_pct"] <= 100
    assert second.patches[0].evidence != outcome.evidence  # judged on the permuted column


@pytest.mark.slow
async def test_when_no_candidate_passes_the_job_registers_one_rejected_with_both_reasons(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    job = poisoner_spec(gate=NEVER_PASS, activate=True)
    result = await run_training(job, without_bias(calibration), ctx)
    [outcome] = result.patches
    assert outcome.status == "rejected" and not outcome.activated
    assert outcome.reason.startswith("no candidate passed the gate")
    assert "poisoner:" in outcome.reason and "poisoner-eraser:" in outcome.reason
    assert result.stack_revision is None


@pytest.mark.slow
async def test_a_validated_label_free_patch_is_activated(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    job = poisoner_spec(gate=ALWAYS_PASS, activate=True)
    result = await run_training(job, without_bias(calibration), ctx)
    [outcome] = result.patches
    assert outcome.status == "validated" and outcome.activated
    stack = await ctx.registry.get_stack("compas")
    assert [(e.patch, e.version) for e in stack.entries] == [(outcome.name, outcome.version)]
