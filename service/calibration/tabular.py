"""CSV and Parquet calibration files: named feature columns plus the target and bias columns."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.calibration.dataset import Parsed
from service.calibration.labels import check_columns, check_row_count
from service.calibration.tables import open_parquet, read_csv_table, read_parquet_table
from service.errors import InvalidCalibrationSet
from service.settings import ModelConfig


def _features(model: ModelConfig) -> list[str]:
    if model.input.features is None:
        raise InvalidCalibrationSet(
            f"model {model.name!r} takes an unnamed tensor of shape {model.input.shape}, so "
            "CSV/Parquet columns cannot be matched to its input: upload an NPZ with an x array"
        )
    return list(model.input.features)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _parse_floats(name: str, texts: np.ndarray) -> np.ndarray:
    try:
        return texts.astype(np.float64)
    except ValueError:
        for row, text in enumerate(texts, start=1):
            try:
                float(text)
            except ValueError:
                raise InvalidCalibrationSet(
                    f"column {name!r} row {row}: {text!r} is not a number", column=name, row=row
                ) from None
        raise


def numeric_column(name: str, column: pa.ChunkedArray) -> np.ndarray:
    """float32 values of a feature column; null, non-numeric and non-finite cells are refused
    with their 1-based data row. Finiteness is checked after the float32 cast, so values
    beyond float32's range count as infinite."""
    if column.null_count:
        row = _first(pc.is_null(column).to_numpy(zero_copy_only=False)) + 1
        raise InvalidCalibrationSet(f"column {name!r} row {row}: missing value", column=name)
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = _parse_floats(name, column.to_numpy(zero_copy_only=False))
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        values = column.to_numpy(zero_copy_only=False).astype(np.float64)
    else:
        raise InvalidCalibrationSet(f"column {name!r} has type {kind}: features must be numeric")
    with np.errstate(over="ignore"):
        values = values.astype(np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        row = _first(bad) + 1
        raise InvalidCalibrationSet(
            f"column {name!r} row {row}: {values[row - 1]} is not a finite float32 number",
            column=name,
            row=row,
        )
    return values


def _parsed(table: pa.Table, features: list[str], names: Sequence[str]) -> Parsed:
    """x in the model's feature order, whatever order the file's columns are in."""
    x = np.stack([numeric_column(f, table.column(f)) for f in features], axis=1)
    return Parsed(x=x, labels={n: table.column(n).to_pylist() for n in names})


def read_csv(data: bytes, model: ModelConfig, names: Sequence[str], max_rows: int) -> Parsed:
    features = _features(model)
    table = read_csv_table(data, "the CSV file")
    check_columns(table.column_names, [*features, *names], "the CSV file")
    check_row_count(table.num_rows, max_rows)
    return _parsed(table, features, names)


def read_parquet(data: bytes, model: ModelConfig, names: Sequence[str], max_rows: int) -> Parsed:
    features = _features(model)
    file = open_parquet(data)
    expected = [*features, *names]
    check_columns(file.schema_arrow.names, expected, "the Parquet file")
    check_row_count(file.metadata.num_rows, max_rows)
    return _parsed(read_parquet_table(file, expected), features, names)
