"""A training job (the Eraser method) in process, against the stand-in black box over HTTP and a
real Redis."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import orjson
import pytest
import redis.asyncio as aioredis

from patch_training.blackbox import MAGIC, Answers, OutputCache, query_log_probs
from patch_training.jobs.context import JobContext, open_context
from patch_training.jobs.pipeline import run_training
from patch_training.jobs.progress import JobProgress
from service.calibration.dataset import CalibrationSet
from service.calibration.loader import load_calibration
from service.errors import PatchRejected
from service.registry.models import StackEntry
from service.settings import GatewaySettings
from tests.fixtures_upstream import V2_PATH, fake_upstream, make_model
from tests.patch_training.jobs.conftest import spec

pytestmark = pytest.mark.slow  # whole training jobs, ~2 s each (`pytest -m "not slow"` skips)

ALWAYS_PASS = {
    "min_bias_reduction_pp": -100.0,
    "max_avg_acc_drop_pp": 100.0,
    "max_acc_drop_pp": 100.0,
}
NEVER_PASS = {"min_bias_reduction_pp": 100.0}


async def test_job_registers_a_signed_version_with_its_report(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    result = await run_training(spec(name="race"), calibration, ctx)
    [outcome] = result.patches
    manifest = await ctx.registry.get_manifest("race", outcome.version)
    assert manifest.kind == "eraser"
    assert manifest.calibration_set_id == calibration.sha256
    assert manifest.default_alpha == outcome.alpha
    assert manifest.training_config["onnx_parity_max_abs_diff"] <= 1e-4
    assert await ctx.registry.get_blob(manifest)  # hash-checked
    status = await ctx.registry.get_status("race", outcome.version)
    assert status == {"status": outcome.status, "reason": outcome.reason}
    report = await ctx.registry.get_report("race", outcome.version)
    body = orjson.loads(report.json_bytes)
    assert body["alpha"]["chosen"] == outcome.alpha
    assert {p["alpha"] for p in body["alpha"]["curve"]} >= {0.0, 1.0}
    assert body["raw"]["eo_bias"] == pytest.approx(outcome.evidence.raw["eo_bias"].estimate)
    assert body["verdict"]["change"] == outcome.evidence.model_dump()["change"]
    signed = manifest.validation_metrics["verdict"]  # what GET /patches/{name}/versions/{v} shows
    assert signed["change"]["eo_bias"] == outcome.evidence.change["eo_bias"].model_dump()
    assert signed["passed"] == (outcome.status == "validated")
    assert report.png is not None and report.png.startswith(b"\x89PNG")
    # Cross-fitting (4 folds by default): every row judged by the fold net that did not see it.
    assert result.tuning_rows + result.verdict_rows == result.rows == len(calibration)
    assert outcome.evidence.rows == result.verdict_rows
    assert body["rows"]["verdict"] == result.verdict_rows
    assert manifest.training_config["net"]["folds"] == len(manifest.training_config["fit"]) == 4


async def test_rerun_reuses_the_cached_black_box_answers(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    first = await run_training(spec(name="race"), calibration, ctx)
    second = await run_training(spec(name="race"), calibration, ctx)
    assert (first.cached_outputs, second.cached_outputs) == (False, True)
    assert [p.version for p in second.patches] == [2]


async def test_a_forged_cache_entry_is_not_trained_on_and_the_result_says_so(
    ctx: JobContext, calibration: CalibrationSet, redis_client: aioredis.Redis
) -> None:
    first = await run_training(spec(name="race"), calibration, ctx)
    where = ctx.cache.redis_key(OutputCache.key_for(ctx.model("compas"), calibration.x))
    stored = await redis_client.get(where)
    forged = io.BytesIO()
    np.save(forged, (await _answers(ctx, calibration)).log_p[:, ::-1].copy())  # flipped
    await redis_client.set(where, stored[: len(MAGIC) + 65] + forged.getvalue())  # old MAC kept
    second = await run_training(spec(name="race"), calibration, ctx)
    assert not second.cached_outputs and "bad MAC" in (second.cache_entry_refused or "")
    assert second.patches[0].evidence == first.patches[0].evidence  # trained on true answers
    assert first.cache_entry_refused is None
    assert (await _answers(ctx, calibration)).cached  # the entry was replaced by a good one


async def test_same_seed_gives_the_same_patch(ctx: JobContext, calibration: CalibrationSet) -> None:
    a = await run_training(spec(name="a"), calibration, ctx)
    b = await run_training(spec(name="b"), calibration, ctx)
    blob_a = await ctx.registry.get_blob(await ctx.registry.get_manifest("a", 1))
    blob_b = await ctx.registry.get_blob(await ctx.registry.get_manifest("b", 1))
    assert blob_a == blob_b
    assert a.patches[0].evidence == b.patches[0].evidence


async def test_rejected_version_stays_registered_and_is_never_activated(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    result = await run_training(spec(name="race", activate=True, gate=NEVER_PASS), calibration, ctx)
    [outcome] = result.patches
    assert outcome.status == "rejected" and not outcome.activated
    assert "bias not reduced" in outcome.reason
    assert result.stack_revision is None
    assert (await ctx.registry.get_stack("compas")).revision == 0
    with pytest.raises(PatchRejected):
        entry = StackEntry(patch="race", version=outcome.version)
        await ctx.registry.set_stack("compas", [entry], 0)


async def test_activation_replaces_the_patch_s_earlier_version_on_the_stack(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    await ctx.registry.set_stack("compas", [], 0, "operator edit before the job")
    job = spec(name="race", activate=True, gate=ALWAYS_PASS)
    first = await run_training(job, calibration, ctx)
    second = await run_training(job, calibration, ctx)
    stack = await ctx.registry.get_stack("compas")
    assert first.stack_revision == 2 and second.stack_revision == stack.revision == 3
    assert [(e.patch, e.version) for e in stack.entries] == [("race", 2)]
    assert stack.entries[0].alpha == second.patches[0].alpha


async def test_a_retried_job_does_not_register_a_second_version(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    retry_ctx = dataclasses.replace(ctx, job_id="job-42")
    first = await run_training(spec(name="race"), calibration, retry_ctx)
    again = await run_training(spec(name="race"), calibration, retry_ctx)
    assert first.patches[0].version == again.patches[0].version == 1
    assert len(await ctx.registry.list_versions("race")) == 1


async def test_one_patch_per_bias_column(ctx: JobContext, calibration: CalibrationSet) -> None:
    twice = dataclasses.replace(
        calibration, bias={"race": calibration.bias["race"], "race2": calibration.bias["race"]}
    )
    result = await run_training(spec(bias=["race", "race2"]), twice, ctx)
    assert [p.name for p in result.patches] == ["compas-race", "compas-race2"]


async def test_a_job_stacks_one_validated_patch_and_says_why_not_the_others(
    ctx: JobContext, calibration: CalibrationSet
) -> None:
    twice = dataclasses.replace(
        calibration, bias={"race": calibration.bias["race"], "race2": calibration.bias["race"]}
    )
    job = spec(bias=["race", "race2"], activate=True, gate=ALWAYS_PASS)
    result = await run_training(job, twice, ctx)
    assert [p.status for p in result.patches] == ["validated", "validated"]
    active = [p for p in result.patches if p.activated]
    assert len(active) == 1 and active[0].not_activated is None
    other = next(p for p in result.patches if not p.activated)
    assert other.not_activated is not None and "never judged as a stack" in other.not_activated
    stack = await ctx.registry.get_stack("compas")
    assert [e.patch for e in stack.entries] == [active[0].name]
    assert result.stack_revision == stack.revision


async def test_image_calibration_set_trains_a_cnn_patch(
    settings: GatewaySettings, redis_client: object
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((96, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    colour = np.where(rng.random(96) < 0.5, "red", "green")
    npz = io.BytesIO()
    np.savez(npz, x=x, digit=y, colour=colour)
    async with fake_upstream(classes=3) as server:
        model = make_model(
            f"http://127.0.0.1:{server.port}{V2_PATH}", classes=3, input_shape=(3, 8, 8)
        )
        image_settings = settings.model_copy(update={"models": [model]})
        async with open_context(image_settings, JobProgress(show_bars=False)) as ctx:
            calib = load_calibration(npz.getvalue(), model, "digit", ["colour"], 1000)
            result = await run_training(
                spec(model="m", target="digit", bias=["colour"], epochs=3), calib, ctx
            )
            manifest = await ctx.registry.get_manifest("m-colour", result.patches[0].version)
    assert manifest.input_shape == [3, 8, 8] and manifest.classes == ["c0", "c1", "c2"]
    assert manifest.training_config["net"]["class"] == "SmallCNN"
    assert manifest.training_config["onnx_parity_max_abs_diff"] <= 1e-4


async def test_the_gate_judges_the_registered_artifact_on_rows_the_method_never_saw(
    ctx: JobContext, calibration: CalibrationSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patch_training.evidence import paired_evidence, served_log_bias
    from patch_training.folds import plan_rows
    from patch_training.methods import METHODS
    from service.eraser_math import fair_log_probs

    seen: list[int] = []
    eraser = METHODS["eraser"]
    original = type(eraser).fit

    def recording_fit(self, data, on_epoch=None):  # type: ignore[no-untyped-def]
        seen.append(len(data.x))
        return original(self, data, on_epoch)

    monkeypatch.setattr(type(eraser), "fit", recording_fit)
    job = spec(name="race")
    result = await run_training(job, calibration, ctx)
    [outcome] = result.patches
    assert seen == [result.tuning_rows]  # the method got the tuning rows only
    plan = plan_rows(calibration.y, calibration.bias["race"], job.verdict_fraction, job.folds,
                     job.holdout_fraction, job.seed)  # fmt: skip
    v = plan.verdict
    manifest = await ctx.registry.get_manifest("race", outcome.version)
    model = ctx.model("compas")
    log_m = (await _answers(ctx, calibration)).log_p
    log_g = served_log_bias(await ctx.registry.get_blob(manifest), calibration.x[v], model)
    fair = np.argmax(fair_log_probs(log_m[v], [log_g], [outcome.alpha]), axis=1)
    again = paired_evidence(calibration.y[v], calibration.bias["race"][v],
                            np.argmax(log_m[v], axis=1), fair, job.gate.bootstrap_draws,
                            job.gate.confidence, job.seed)  # fmt: skip
    assert again == outcome.evidence


async def _answers(ctx: JobContext, calibration: CalibrationSet) -> Answers:
    return await query_log_probs(ctx.model("compas"), calibration.x, ctx.cache)
