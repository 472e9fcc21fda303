"""Formats are recognised by content; the file name only breaks ties."""

from __future__ import annotations

import numpy as np
import pytest

from service.calibration.loader import load_calibration
from service.calibration.sniff import detect_format
from service.errors import InvalidCalibrationSet
from tests.service.calibration.builders import (
    BIAS,
    TARGET,
    compas_columns,
    csv_bytes,
    npz_bytes,
    parquet_bytes,
    tabular_model,
    zip_bytes,
)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (csv_bytes(compas_columns()), "csv"),
        (parquet_bytes(compas_columns()), "parquet"),
        (npz_bytes(x=np.zeros(2)), "npz"),
        (zip_bytes({"labels.csv": b"file\n"}), "zip"),
    ],
)
def test_content_decides_whatever_the_file_is_called(data: bytes, fmt: str) -> None:
    assert detect_format(data, "upload.txt") == fmt


def test_extension_decides_only_an_archive_that_is_neither_npz_nor_images() -> None:
    data = zip_bytes({"notes.txt": b"hello"})
    assert detect_format(data, "set.NPZ") == "npz"
    assert detect_format(data, "set.zip") == "zip"
    assert detect_format(data, None) == "zip"


@pytest.mark.parametrize("data", [b"\x89\x00\xff\xfe" * 64, bytes(range(256)), b""])
def test_garbage_lists_the_accepted_formats(data: bytes) -> None:
    with pytest.raises(InvalidCalibrationSet, match=r"CSV.*Parquet.*NPZ.*ZIP of images"):
        load_calibration(data, tabular_model(), TARGET, [BIAS], 100, "mystery.bin")


def test_zip_with_a_broken_directory_is_refused() -> None:
    data = zip_bytes({"labels.csv": b"file\n"})
    with pytest.raises(InvalidCalibrationSet, match="ZIP archive cannot be read"):
        detect_format(data[:-10])


def test_npz_with_a_non_array_member_says_so() -> None:
    data = zip_bytes({"x.npy": b"", "notes.txt": b"hello"})
    with pytest.raises(InvalidCalibrationSet, match=r"only hold .npy arrays"):
        load_calibration(data, tabular_model(), TARGET, [BIAS], 100, "set.npz")
