"""``load_calibration``: bytes in, a validated CalibrationSet out, or one 422 naming the problem.

Everything is checked here, before the caller stores the bytes or queries the black box, so a
bad upload costs neither Redis space nor upstream calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from service.calibration.dataset import CalibrationSet, Format, Parsed
from service.calibration.images import read_image_zip
from service.calibration.labels import (
    bias_groups,
    check_selection,
    label_strings,
    target_indices,
)
from service.calibration.npz import read_npz
from service.calibration.pairs import check_queried_rows, read_pairs
from service.calibration.sniff import detect_format
from service.calibration.tabular import read_csv, read_parquet
from service.errors import InvalidCalibrationSet
from service.registry.signing import sha256_hex
from service.settings import ModelConfig

Reader = Callable[[bytes, ModelConfig, Sequence[str], int], Parsed]
READERS: dict[Format, Reader] = {
    "csv": read_csv,
    "parquet": read_parquet,
    "npz": read_npz,
    "zip": read_image_zip,
}


def load_calibration(
    data: bytes,
    model: ModelConfig,
    target: str,
    bias: Sequence[str],
    max_rows: int,
    filename: str | None = None,
    bias_required: bool = True,
    bias_is_input: bool = False,
    pairs: bytes | None = None,
) -> CalibrationSet:
    """Parse and validate an upload for ``model``; raises InvalidCalibrationSet on bad input.
    ``bias_required=False``: a set with x and the target only is accepted (label-free methods;
    the file must then have exactly the features and the target). ``bias_is_input`` (FMD):
    a bias column that is an input column is read from x (no separate column in the file),
    with 2 to ``MAX_INPUT_GROUPS`` distinct values; any other bias column is a column of the
    file and needs its counterfactuals in ``pairs`` (the NPZ format of ``pairs``), which
    become the set's ``pairs``."""
    bias = [bias] if isinstance(bias, str) else list(bias)
    check_selection(model, target, bias, bias_required, bias_is_input, pairs is not None)
    fmt = detect_format(data, filename)
    features = list(model.input.features or ())
    inputs = [b for b in bias if bias_is_input and b in features]
    from_file = [b for b in bias if b not in inputs]
    parsed = READERS[fmt](data, model, [target, *from_file], max_rows)
    y = target_indices(target, label_strings(target, parsed.labels[target]), model.classes)
    groups = {}
    for name in bias:
        if name in inputs:
            groups[name] = input_groups(name, parsed.x[:, features.index(name)])
        else:
            groups[name] = bias_groups(name, parsed.labels[name])
    cf = {}
    if pairs is not None:
        cf = read_pairs(pairs, parsed.x, model, from_file, InvalidCalibrationSet)
        flipped = [len(np.unique(groups[name])) - 1 for name in inputs]
        per_row = [*flipped, *(int(v.shape[1]) for v in cf.values())]
        check_queried_rows(len(y), per_row, InvalidCalibrationSet)
    return CalibrationSet(
        x=parsed.x, y=y, bias=groups, sha256=sha256_hex(data), format=fmt, pairs=cf
    )


MAX_INPUT_GROUPS = 20  # distinct values of an input-column attribute (as the audit allows)


def input_groups(name: str, column: np.ndarray) -> np.ndarray:
    """An input column's values as group strings (``1.0`` → ``"1"``, as the audit writes
    them); 2 to ``MAX_INPUT_GROUPS`` distinct values, or refused."""
    distinct = np.unique(column)
    if not 2 <= len(distinct) <= MAX_INPUT_GROUPS:
        raise InvalidCalibrationSet(
            f"attribute {name!r} takes {len(distinct)} distinct values in the calibration set: "
            f"an input-column attribute needs 2 to {MAX_INPUT_GROUPS} (bin the column)",
            column=name,
        )
    return label_strings(name, column.astype(np.float64).tolist())
