"""Accepting a calibration set: validate everything first, then store it content-addressed.

Shared by ``POST /patches`` and ``eraser train distill`` so that both refuse the same uploads
with the same messages, and nothing is stored unless the whole set is usable.
"""

from __future__ import annotations

from patch_training.calibration import (
    CalibrationMeta,
    CalibrationSet,
    describe,
    load_calibration,
)
from patch_training.jobs.spec import DistillJobSpec
from service.errors import InvalidCalibrationSet
from service.settings import ModelConfig, TrainingSettings


def check_upload(
    data: bytes,
    filename: str | None,
    model: ModelConfig,
    spec: DistillJobSpec,
    training: TrainingSettings,
) -> tuple[CalibrationSet, CalibrationMeta]:
    """Parse and validate (CPU work: run it off the event loop); the set and its description."""
    limit = int(training.max_calibration_mb * 2**20)
    if len(data) > limit:
        raise InvalidCalibrationSet(
            f"calibration file is {len(data)} bytes; the limit is {training.max_calibration_mb} MB"
        )
    calib = load_calibration(
        data, model, spec.target, spec.bias, training.max_calibration_rows, filename=filename
    )
    return calib, describe(calib, model, spec.target, filename, len(data))
