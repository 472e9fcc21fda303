"""NPZ calibration files: an ``x`` array shaped like the model input plus one 1-D array per
target/bias name. The only format for models whose input is an unnamed tensor."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import numpy as np

from service.calibration.archive import MAX_TOTAL_BYTES, member_names, open_zip
from service.calibration.dataset import Parsed
from service.calibration.labels import check_columns, check_row_count
from service.errors import InvalidCalibrationSet
from service.settings import ModelConfig

NUMERIC_KINDS = "biuf"
LABEL_KINDS = "biufUS"


def _array(npz: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    """One member, with pickled (object) arrays and corrupt members refused by name."""
    try:
        return npz[name]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidCalibrationSet(f"NPZ array {name!r} cannot be read: {exc}") from exc


def _check_shape(x: np.ndarray, model: ModelConfig) -> None:
    shape = tuple(model.input.shape)
    if x.dtype.kind not in NUMERIC_KINDS:
        raise InvalidCalibrationSet(f"NPZ array 'x' has dtype {x.dtype}: it must be numeric")
    if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
        raise InvalidCalibrationSet(
            f"NPZ array 'x' has shape {list(x.shape)}: model {model.name!r} needs "
            f"[N, {', '.join(map(str, shape))}]"
        )


def _inputs(x: np.ndarray) -> np.ndarray:
    """float32 as-is (no scaling): the operator ships exactly what the black box takes."""
    with np.errstate(over="ignore"):
        values = x.astype(np.float32)
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise InvalidCalibrationSet(f"NPZ array 'x' row {row} holds a NaN or infinite value")
    return values


def _label_values(name: str, values: np.ndarray, rows: int) -> list[object]:
    if values.ndim != 1 or len(values) != rows:
        raise InvalidCalibrationSet(
            f"NPZ array {name!r} has shape {list(values.shape)}: it must be 1-D of length {rows}"
        )
    if values.dtype.kind not in LABEL_KINDS:
        raise InvalidCalibrationSet(f"NPZ array {name!r} has unsupported dtype {values.dtype}")
    return values.tolist()


def read_npz(data: bytes, model: ModelConfig, names: Sequence[str], max_rows: int) -> Parsed:
    archive = open_zip(data, MAX_TOTAL_BYTES)
    if not all(n.endswith(".npy") for n in member_names(archive)):
        raise InvalidCalibrationSet("an NPZ file may only hold .npy arrays")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        check_columns(npz.files, ["x", *names], "the NPZ file (arrays)")
        x = _array(npz, "x")
        _check_shape(x, model)
        check_row_count(len(x), max_rows)
        labels = {n: _label_values(n, _array(npz, n), len(x)) for n in names}
    return Parsed(x=_inputs(x), labels=labels)
