"""Accepting a calibration set: validate everything first, then describe it for the store.

Shared by ``POST /patches`` (through ``checker.UploadChecker``, in its own process) and
``eraser train`` so that both refuse the same uploads with the same messages, and nothing is
stored unless the whole set is usable.
"""

from __future__ import annotations

from service.calibration.dataset import CalibrationSet
from service.calibration.loader import load_calibration
from service.calibration.meta import CalibrationMeta, describe
from service.errors import InvalidCalibrationSet
from service.jobs.spec import TrainingJobSpec
from service.settings import ModelConfig, TrainingSettings


def check_upload(
    data: bytes,
    filename: str | None,
    model: ModelConfig,
    spec: TrainingJobSpec,
    training: TrainingSettings,
    pairs: bytes | None = None,
) -> tuple[CalibrationSet, CalibrationMeta]:
    """Parse and validate (CPU work: keep it off an event loop); the set and its description.
    ``pairs``: the counterfactual pairs NPZ of an FMD job (``loader.load_calibration``)."""
    limit = int(training.max_calibration_mb * 2**20)
    for what, size in (("calibration file", len(data)), ("pairs file", len(pairs or b""))):
        if size > limit:
            raise InvalidCalibrationSet(
                f"{what} is {size} bytes; the limit is {training.max_calibration_mb} MB"
            )
    calib = load_calibration(
        data,
        model,
        spec.target,
        spec.bias,
        training.max_calibration_rows,
        filename=filename,
        bias_required=not spec.label_free,
        bias_is_input=spec.bias_is_input,
        pairs=pairs,
    )
    return calib, describe(calib, model, spec.target, filename, len(data))
