"""Job fixtures: the stand-in black box, a COMPAS calibration set, and a job context."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from blackbox.data import BIAS, TARGET, compas_calibration_csv, compas_split, load_compas
from patch_training.jobs.context import JobContext, open_context
from patch_training.jobs.progress import JobProgress
from service.calibration.dataset import CalibrationSet
from service.calibration.loader import load_calibration
from service.calibration.meta import describe
from service.jobs.spec import TrainingJobSpec
from service.settings import GatewaySettings
from tests.service.api.conftest import make_settings


@pytest.fixture
def settings(key_prefix: str, blackbox_url: str, redis_client: object) -> GatewaySettings:
    return make_settings(key_prefix, blackbox_url)


@pytest.fixture(scope="session")
def calibration_csv() -> bytes:
    data = load_compas()
    return compas_calibration_csv(data, compas_split(data).calib)


@pytest.fixture
async def ctx(settings: GatewaySettings) -> AsyncIterator[JobContext]:
    async with open_context(settings, JobProgress(show_bars=False), job_id=None) as context:
        yield context


@pytest.fixture
async def calibration(ctx: JobContext, calibration_csv: bytes) -> CalibrationSet:
    """The COMPAS calibration split, validated and stored like an upload."""
    model = ctx.model("compas")
    calib = load_calibration(calibration_csv, model, TARGET, [BIAS], 100_000, "calib.csv")
    await ctx.calibrations.put(
        calibration_csv, describe(calib, model, TARGET, "calib.csv", len(calibration_csv))
    )
    return calib


def spec(**overrides: object) -> TrainingJobSpec:
    """A quick job: few epochs keep each test to about a second of training."""
    fields: dict = {"model": "compas", "target": TARGET, "bias": [BIAS], "epochs": 40}
    return TrainingJobSpec.model_validate(fields | overrides)
