"""Uploaded counterfactual pairs: the x̄ of every row, for attributes that are not model inputs.

One format for the audit (``audit_input``) and FMD training jobs (``loader``): an NPZ with
``x_cf_<attribute>`` (or ``x_cf`` when one attribute uses pairs), shaped [N, *input shape] or
[N, M, *input shape] (M counterfactuals per row, averaged), row i the counterfactual(s) of the
data file's row i; an ``x`` array, if present, must equal the data file's rows (a check that
the two files are aligned). Numeric and finite, cast to float32 as is (no scaling), read
without pickle and within the calibration reader's bounds. Any other array is refused, so a
mislabelled array cannot silently go unused.

The two callers refuse with their own error (``fault``: InvalidAuditInput for an audit,
InvalidCalibrationSet for a training upload), with the same messages.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

import numpy as np

from service.calibration.archive import MAX_TOTAL_BYTES, member_names, open_zip
from service.errors import BadRequest, InvalidCalibrationSet
from service.settings import ModelConfig

Fault = type[BadRequest]
MAX_QUERIED_ROWS = 2_000_000  # originals plus every counterfactual sent to the black box


def read_pairs(
    pairs: bytes,
    x: np.ndarray,
    model: ModelConfig,
    attributes: Sequence[str],
    fault: Fault,
) -> dict[str, np.ndarray]:
    """x̄ float32 [N, M, *shape] per attribute of ``attributes`` (those that need pairs), from
    the pairs NPZ whose rows match the data rows ``x`` [N, *shape]."""
    attributes = list(attributes)
    with NpzUpload(pairs, "pairs file", fault) as npz:
        names = set(npz.files)
        wanted = {a: f"x_cf_{a}" if f"x_cf_{a}" in names else "x_cf" for a in attributes}
        if len(attributes) > 1 and "x_cf" in names:
            raise fault(
                f"the pairs NPZ holds x_cf, but {attributes} all need pairs: name each array "
                "x_cf_<attribute>"
            )
        for attribute, member in wanted.items():
            if member not in names:
                raise fault(
                    f"the pairs NPZ has no counterfactuals for attribute {attribute!r}: "
                    f"expected an array x_cf_{attribute} (or x_cf); it holds {sorted(names)}",
                    attribute=attribute,
                )
        extra = sorted(names - set(wanted.values()) - {"x"})
        if extra:
            raise fault(
                f"the pairs NPZ holds arrays {extra} that no attribute uses "
                f"(expected {sorted(set(wanted.values()))}, and optionally x)"
            )
        if "x" in names:
            own = model_inputs(npz.member("x"), model, "x", fault, per_row=False)
            if own.shape != x.shape or not np.array_equal(own, x):
                raise fault(
                    f"the pairs NPZ's x (shape {list(own.shape)}) is not the data file's rows "
                    f"(shape {list(x.shape)}): the two files are not aligned"
                )
        out = {}
        for attribute, member in wanted.items():
            cf = model_inputs(npz.member(member), model, member, fault, per_row=True)
            if len(cf) != len(x):
                raise fault(
                    f"pairs array {member!r} has {len(cf)} rows; the data file has {len(x)}: row "
                    "i of the pairs is the counterfactual of data row i",
                    attribute=attribute,
                )
            out[attribute] = cf
    return out


def check_queried_rows(rows: int, per_row: Sequence[int], fault: Fault) -> None:
    """Refuse inputs that would send more than ``MAX_QUERIED_ROWS`` rows to the black box:
    ``rows`` originals plus ``rows × m`` for each attribute's m counterfactuals per row."""
    queried = rows + sum(rows * m for m in per_row)
    if queried > MAX_QUERIED_ROWS:
        raise fault(
            f"this would send {queried} rows to the black box (the rows and their "
            f"counterfactuals), more than the limit of {MAX_QUERIED_ROWS}: send fewer rows, "
            "attributes or counterfactuals per row"
        )


class NpzUpload:
    """An uploaded NPZ, opened with the calibration reader's bounds and without pickle."""

    def __init__(self, data: bytes, what: str, fault: Fault) -> None:
        self._data, self._what, self._fault = data, what, fault

    def __enter__(self) -> NpzUpload:
        try:
            archive = open_zip(self._data, MAX_TOTAL_BYTES)
        except InvalidCalibrationSet as exc:
            raise self._fault(f"{self._what}: {exc.message}") from None
        if not all(n.endswith(".npy") for n in member_names(archive)):
            raise self._fault(f"the {self._what} is not an NPZ: it may only hold arrays")
        try:
            self._npz = np.load(io.BytesIO(self._data), allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile) as exc:
            raise self._fault(f"the {self._what} cannot be read: {exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._npz.close()

    @property
    def files(self) -> list[str]:
        return list(self._npz.files)

    def member(self, name: str) -> np.ndarray:
        """One array; a pickled (object) or corrupt member is refused by name."""
        try:
            return self._npz[name]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise self._fault(f"{self._what} array {name!r} cannot be read: {exc}") from None


def model_inputs(
    values: np.ndarray, model: ModelConfig, name: str, fault: Fault, per_row: bool
) -> np.ndarray:
    """float32 model inputs [N, *shape] (or [N, M, *shape] with ``per_row``), finite."""
    shape = tuple(model.input.shape)
    if values.dtype.kind not in "biuf":
        raise fault(f"array {name!r} has dtype {values.dtype}: it must be numeric", array=name)
    uploaded = list(values.shape)
    if per_row and values.ndim == len(shape) + 1:
        values = values[:, None]
    extra = 2 if per_row else 1
    if values.ndim != len(shape) + extra or tuple(values.shape[extra:]) != shape:
        want = ", ".join(map(str, shape))
        forms = f"[N, {want}] or [N, M, {want}]" if per_row else f"[N, {want}]"
        raise fault(
            f"array {name!r} has shape {uploaded}: model {model.name!r} needs {forms}",
            array=name,
        )
    if per_row and values.shape[1] == 0:
        raise fault(f"array {name!r} holds no counterfactuals (M = 0)", array=name)
    with np.errstate(over="ignore"):
        out = values.astype(np.float32)
    bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 1
        raise fault(f"array {name!r} row {row} holds a NaN or infinite value", array=name, row=row)
    return out
