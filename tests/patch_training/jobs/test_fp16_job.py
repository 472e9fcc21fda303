"""A training job with ``export.fp16``: the registered, gated artifact is the float16 graph."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from patch_training.jobs.context import open_context
from patch_training.jobs.pipeline import run_training
from patch_training.jobs.progress import JobProgress
from service.calibration.loader import load_calibration
from service.settings import GatewaySettings
from tests.fixtures_upstream import V2_PATH, fake_upstream, make_model
from tests.patch_training.jobs.conftest import spec

pytestmark = pytest.mark.slow  # a whole training job against a real Redis and HTTP upstream


@pytest.mark.parametrize("fp16", [True, False])
async def test_image_job_registers_the_fp16_export_it_checked(
    settings: GatewaySettings, redis_client: object, fp16: bool
) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((96, 3, 8, 8)).astype(np.float32)
    npz = io.BytesIO()
    np.savez(
        npz, x=x, digit=rng.integers(0, 3, 96), colour=np.where(rng.random(96) < 0.5, "r", "g")
    )
    async with fake_upstream(classes=3) as server:
        model = make_model(
            f"http://127.0.0.1:{server.port}{V2_PATH}", classes=3, input_shape=(3, 8, 8)
        )
        image_settings = settings.model_copy(update={"models": [model]})
        async with open_context(image_settings, JobProgress(show_bars=False)) as ctx:
            calib = load_calibration(npz.getvalue(), model, "digit", ["colour"], 1000)
            job = spec(model="m", target="digit", bias=["colour"], epochs=3, export={"fp16": fp16})
            result = await run_training(job, calib, ctx)
            manifest = await ctx.registry.get_manifest("m-colour", result.patches[0].version)
            blob = await ctx.registry.get_blob(manifest)
    graph = onnx.load_from_string(blob).graph
    kinds = {t.data_type for t in graph.initializer}
    record = manifest.training_config["export"]
    assert record["fp16"] is fp16
    if fp16:
        assert kinds == {TensorProto.FLOAT16}
        assert 0 < record["fp16_parity_max_abs_diff"] <= 0.02
    else:
        assert TensorProto.FLOAT16 not in kinds
        assert record["fp16_parity_max_abs_diff"] is None
    assert graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
