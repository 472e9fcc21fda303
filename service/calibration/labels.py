"""Checks shared by every format: which columns are asked for, row counts, target and bias labels.

Readers hand over label values as plain Python objects, so a CSV ``"1"``, a Parquet ``1`` and
an NPZ ``1.0`` all follow the same rules here and become the same group value ``"1"``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from service.errors import InvalidCalibrationSet
from service.settings import ModelConfig

MAX_LISTED = 5  # values quoted in one error message


def check_selection(
    model: ModelConfig,
    target: str,
    bias: Sequence[str],
    bias_required: bool = True,
    bias_is_input: bool = False,
    has_pairs: bool = False,
) -> None:
    """Refuse a target/bias choice that cannot train a patch, before the file is even read.
    ``bias_required=False`` (label-free methods): no bias column is fine. ``bias_is_input``
    (FMD): every bias column is the attribute whose counterfactuals the job needs: an input
    column of the model (set to its other values), or, with uploaded pairs (``has_pairs``), a
    column of the file; otherwise no bias column may be an input, and pairs are refused."""
    if not bias and bias_required:
        raise InvalidCalibrationSet("at least one bias column is required")
    if len(set(bias)) != len(bias):
        raise InvalidCalibrationSet(f"bias columns are listed more than once: {list(bias)}")
    if target in bias:
        raise InvalidCalibrationSet(f"target {target!r} cannot also be a bias column")
    features = set(model.input.features or ())
    if target in features:
        raise InvalidCalibrationSet(f"target {target!r} is a feature of model {model.name!r}")
    if bias_is_input:
        absent = [b for b in bias if b not in features]
        if absent and not has_pairs:
            inputs = f"inputs: {sorted(features)}" if features else "an unnamed tensor"
            raise InvalidCalibrationSet(
                f"bias columns {absent} are not input columns of model {model.name!r} "
                f"({inputs}) and no counterfactual pairs were uploaded: FMD sets an input "
                "attribute to its other values; for any other attribute upload a pairs NPZ "
                "(x_cf, row i the counterfactual of calibration row i)",
                missing=absent,
            )
        if has_pairs and not absent:
            raise InvalidCalibrationSet(
                f"a pairs file was uploaded, but every bias column {list(bias)} is an input "
                "column (set to its other values): pairs are for attributes that are not inputs"
            )
        return
    if has_pairs:
        raise InvalidCalibrationSet(
            "counterfactual pairs were uploaded, but only method 'fmd' uses them"
        )
    leaked = [b for b in bias if b in features]
    if leaked:
        raise InvalidCalibrationSet(
            f"bias columns {leaked} are features of model {model.name!r}: the patch must never "
            "see the bias attribute, so it cannot be one of the model's inputs"
        )


def check_row_count(rows: int, max_rows: int) -> None:
    """Readers call this as early as the count is known, before any expensive decoding."""
    if rows == 0:
        raise InvalidCalibrationSet("the calibration set has no rows")
    if rows > max_rows:
        raise InvalidCalibrationSet(
            f"the calibration set has {rows} rows, more than the limit of {max_rows}"
        )


def check_columns(found: Sequence[str], expected: Sequence[str], where: str) -> None:
    """Exactly ``expected``, in any order: extra columns usually mean a wrong export, and a
    stray sensitive column must not slip into training unnoticed."""
    duplicated = sorted(c for c, n in Counter(found).items() if n > 1)
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if not (duplicated or missing or extra):
        return
    problems = [
        f"{label} {names}"
        for label, names in (("duplicated", duplicated), ("missing", missing), ("extra", extra))
        if names
    ]
    raise InvalidCalibrationSet(
        f"{where} must have exactly the columns {list(expected)}: {'; '.join(problems)}",
        missing=missing,
        extra=extra,
    )


def _label_text(value: object) -> str | None:
    """Group/class text of one value; None when it is missing (null, blank, NaN or infinite)."""
    if value is None:
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = str(value)
    return text if text.strip() else None


def label_strings(name: str, values: Sequence[object]) -> np.ndarray:
    """Column ``name`` as str values; a missing value is refused with its 1-based row."""
    texts = [_label_text(v) for v in values]
    for row, text in enumerate(texts, start=1):
        if text is None:
            raise InvalidCalibrationSet(
                f"column {name!r} row {row}: missing value ({values[row - 1]!r})",
                column=name,
                row=row,
            )
    return np.array(texts, dtype=str)


def _as_index(text: str, k: int) -> int | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() and 0 <= number < k else None


def target_indices(target: str, values: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Class indices: class names when any value is one, otherwise integers 0..K-1."""
    distinct, inverse = np.unique(values, return_inverse=True)
    names = {c: i for i, c in enumerate(classes)}
    if any(v in names for v in distinct):
        mapped = [names.get(v) for v in distinct]
    else:
        mapped = [_as_index(v, len(classes)) for v in distinct]
    unknown = [str(v) for v, i in zip(distinct, mapped, strict=True) if i is None]
    if unknown:
        raise InvalidCalibrationSet(
            f"target {target!r} has values that are neither class names {list(classes)} nor "
            f"indices 0..{len(classes) - 1}: {unknown[:MAX_LISTED]}",
            unknown=unknown[:MAX_LISTED],
        )
    if len(distinct) < 2:
        raise InvalidCalibrationSet(
            f"target {target!r} has a single class {str(distinct[0])!r}: "
            "a patch needs at least two distinct classes"
        )
    return np.array(mapped, dtype=np.int64)[inverse.reshape(-1)]


def bias_groups(name: str, values: Sequence[object]) -> np.ndarray:
    """Group values of a bias column; a single group leaves nothing to equalise."""
    groups = label_strings(name, values)
    distinct = np.unique(groups)
    if len(distinct) < 2:
        raise InvalidCalibrationSet(
            f"bias column {name!r} has a single value {str(distinct[0])!r}: "
            "a patch needs at least two groups",
            column=name,
        )
    return groups
