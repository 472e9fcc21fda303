"""Operator-uploaded calibration sets: parsed, validated, summarised and stored by content hash.

``load_calibration`` refuses a bad upload with one InvalidCalibrationSet (422) that names the
problem, before anything is stored or the black box is queried; ``CalibrationStore`` keeps the
accepted bytes under their sha256 so each patch version names the exact data it came from.
"""

from patch_training.calibration.dataset import CalibrationSet
from patch_training.calibration.loader import load_calibration
from patch_training.calibration.meta import CalibrationMeta, describe
from patch_training.calibration.store import CalibrationStore

__all__ = [
    "CalibrationMeta",
    "CalibrationSet",
    "CalibrationStore",
    "describe",
    "load_calibration",
]
