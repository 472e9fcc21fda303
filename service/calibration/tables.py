"""CSV and Parquet bytes to an Arrow table, with reader failures turned into 422s."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from service.errors import InvalidCalibrationSet

# Text that means "no value" in CSV exports; such cells become nulls and are refused by name.
NULL_TEXTS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL"]


def _header(data: bytes, where: str) -> list[str]:
    """Column names from the first record, read separately so every column can be typed as
    string: Arrow's type inference would hide which row holds a non-number."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidCalibrationSet(f"{where} is not UTF-8 text (byte {exc.start})") from exc
    try:
        header = next(csv.reader(io.StringIO(text)), None)
    except csv.Error as exc:
        raise InvalidCalibrationSet(f"{where} has an unreadable header row: {exc}") from exc
    if not header:
        raise InvalidCalibrationSet(f"{where} is empty: a header row is required")
    return header


def read_csv_table(data: bytes, where: str) -> pa.Table:
    """Every column as nullable strings; conversion and its errors are the caller's."""
    names = _header(data, where)
    options = pacsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()),
        strings_can_be_null=True,
        null_values=NULL_TEXTS,
    )
    try:
        return pacsv.read_csv(io.BytesIO(data), convert_options=options)
    except pa.ArrowException as exc:
        raise InvalidCalibrationSet(f"{where} cannot be parsed: {exc}") from exc


def open_parquet(data: bytes) -> pq.ParquetFile:
    """The file's footer only: row count and column names are checked before reading data."""
    try:
        return pq.ParquetFile(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise InvalidCalibrationSet(f"the Parquet file cannot be read: {exc}") from exc


def read_parquet_table(file: pq.ParquetFile, columns: list[str]) -> pa.Table:
    try:
        return file.read(columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidCalibrationSet(f"the Parquet file cannot be read: {exc}") from exc
