"""CSV and Parquet uploads: columns matched by name, x in the model's feature order."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from service.calibration.loader import load_calibration
from service.errors import InvalidCalibrationSet
from tests.service.calibration.builders import (
    BIAS,
    TARGET,
    compas_columns,
    csv_bytes,
    feature_matrix,
    image_model,
    parquet_bytes,
    tabular_model,
)

WRITERS = {"csv": csv_bytes, "parquet": parquet_bytes}


def _load(data: bytes, **kwargs: object):
    return load_calibration(data, tabular_model(), TARGET, [BIAS], max_rows=100, **kwargs)


@pytest.mark.parametrize("fmt", WRITERS)
def test_columns_in_any_order_give_x_in_model_feature_order(fmt: str) -> None:
    columns = compas_columns()
    shuffled = {name: columns[name] for name in reversed(list(columns))}
    data = WRITERS[fmt](shuffled)
    cal = _load(data)
    assert cal.format == fmt
    assert cal.sha256 == hashlib.sha256(data).hexdigest()
    assert cal.x.dtype == np.float32
    np.testing.assert_array_equal(cal.x, feature_matrix(columns))
    np.testing.assert_array_equal(cal.y, columns[TARGET])
    assert cal.bias[BIAS].tolist() == columns[BIAS]


@pytest.mark.parametrize("fmt", WRITERS)
def test_target_given_as_class_names_maps_to_indices(fmt: str) -> None:
    columns = compas_columns()
    names = tabular_model().classes
    columns[TARGET] = [names[v] for v in columns[TARGET]]
    cal = _load(WRITERS[fmt](columns))
    np.testing.assert_array_equal(cal.y, compas_columns()[TARGET])
    assert cal.y.dtype == np.int64


def test_numeric_bias_values_are_kept_as_their_text() -> None:
    columns = compas_columns()
    columns[BIAS] = [0, 1, 0, 1, 1, 1]
    cal = _load(parquet_bytes(columns))
    assert cal.bias[BIAS].tolist() == ["0", "1", "0", "1", "1", "1"]


def test_model_without_feature_names_needs_npz() -> None:
    with pytest.raises(InvalidCalibrationSet, match=r"unnamed tensor.*NPZ"):
        load_calibration(csv_bytes(compas_columns()), image_model(), "label", [BIAS], 100)


@pytest.mark.parametrize("fmt", WRITERS)
def test_missing_and_extra_columns_are_named(fmt: str) -> None:
    columns = compas_columns()
    del columns["age"]
    columns["zip_code"] = [1] * 6
    with pytest.raises(InvalidCalibrationSet, match=r"missing \['age'\]; extra \['zip_code'\]"):
        _load(WRITERS[fmt](columns))


def test_non_numeric_feature_names_column_and_row() -> None:
    columns = compas_columns()
    columns["priors_count"][3] = "many"
    with pytest.raises(InvalidCalibrationSet, match="'priors_count' row 4: 'many' is not a number"):
        _load(csv_bytes(columns))


def test_non_numeric_parquet_feature_names_column_and_row() -> None:
    columns = compas_columns()
    columns["sex"] = ["0", "1", "x", "1", "0", "1"]
    with pytest.raises(InvalidCalibrationSet, match="'sex' row 3: 'x' is not a number"):
        _load(parquet_bytes(columns))


@pytest.mark.parametrize("cell", ["", "NaN", "inf", "-inf", "1e39"])
def test_empty_nan_or_infinite_feature_cell_names_column_and_row(cell: str) -> None:
    columns = compas_columns()
    columns["age"][1] = cell
    with pytest.raises(InvalidCalibrationSet, match="'age' row 2"):
        _load(csv_bytes(columns))


def test_null_in_parquet_feature_names_column_and_row() -> None:
    columns = compas_columns()
    columns["juv_fel_count"][4] = None
    with pytest.raises(InvalidCalibrationSet, match="'juv_fel_count' row 5: missing"):
        _load(parquet_bytes(columns))


def test_nan_in_parquet_feature_names_column_and_row() -> None:
    columns = compas_columns()
    columns["age"] = [float(v) for v in columns["age"]]
    columns["age"][5] = float("nan")
    with pytest.raises(InvalidCalibrationSet, match="'age' row 6: nan is not a finite"):
        _load(parquet_bytes(columns))


def test_ragged_csv_row_is_refused() -> None:
    data = csv_bytes(compas_columns()) + b"1,2,3\n"
    with pytest.raises(InvalidCalibrationSet, match=r"cannot be parsed.*columns"):
        _load(data)


def test_header_only_csv_has_no_rows() -> None:
    data = csv_bytes({name: [] for name in compas_columns()})
    with pytest.raises(InvalidCalibrationSet, match="no rows"):
        _load(data)


def test_truncated_parquet_is_refused() -> None:
    data = parquet_bytes(compas_columns())
    with pytest.raises(InvalidCalibrationSet, match="Parquet file cannot be read"):
        _load(data[: len(data) // 2])
