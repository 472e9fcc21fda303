"""ZIP-of-images calibration files: ``labels.csv`` at the root names each image and its labels.

Images are converted to what an image model takes: [C, H, W] float32 in [0, 1], resized to the
model's input size. Every image in the archive must be listed, so a file dropped by a broken
export is noticed instead of silently shrinking the set.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from service.calibration.archive import member_names, open_zip
from service.calibration.dataset import Parsed
from service.calibration.labels import (
    MAX_LISTED,
    check_columns,
    check_row_count,
    label_strings,
)
from service.calibration.tables import read_csv_table
from service.errors import InvalidCalibrationSet
from service.settings import ModelConfig

LABELS = "labels.csv"
FILE_COLUMN = "file"
MAX_IMAGE_BYTES = 50 * 1024**2  # one member, uncompressed
MAX_IMAGE_PIXELS = 64 * 1024**2  # checked from the header, before pixels are decoded
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MODES = {1: "L", 3: "RGB"}
DECODE_ERRORS = (OSError, SyntaxError, ValueError, zlib.error, zipfile.BadZipFile)


def _image_geometry(model: ModelConfig) -> tuple[str, int, int]:
    """(Pillow mode, height, width) of the model's input."""
    shape = model.input.shape
    if len(shape) != 3 or shape[0] not in MODES:
        raise InvalidCalibrationSet(
            f"model {model.name!r} takes input shape {shape}, not an image [C, H, W] with C 1 "
            "or 3: upload CSV, Parquet or NPZ instead of a ZIP of images"
        )
    return MODES[shape[0]], shape[1], shape[2]


def _is_image(name: str) -> bool:
    """Image-named members, without the resource-fork copies macOS adds to its archives."""
    base = name.rsplit("/", 1)[-1]
    hidden = name.startswith("__MACOSX/") or base.startswith("._")
    return name.lower().endswith(IMAGE_SUFFIXES) and not hidden


def _check_listing(files: Sequence[str], members: Sequence[str]) -> None:
    present, listed = set(members), set(files)
    missing = [f for f in files if f not in present]
    if missing:
        raise InvalidCalibrationSet(
            f"{LABELS} lists files that are not in the archive: {missing[:MAX_LISTED]}"
        )
    unlisted = [m for m in members if _is_image(m) and m not in listed]
    if unlisted:
        raise InvalidCalibrationSet(
            f"{len(unlisted)} images in the archive are not listed in {LABELS}: "
            f"{unlisted[:MAX_LISTED]}"
        )


def _decode(archive: zipfile.ZipFile, name: str, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image as [C, H, W] float32 in [0, 1]."""
    try:
        with Image.open(io.BytesIO(archive.read(name))) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InvalidCalibrationSet(f"image {name!r} is {image.size}: too many pixels")
            pixels = image.convert(mode).resize(size, Image.Resampling.BILINEAR)
    except (*DECODE_ERRORS, Image.DecompressionBombError) as exc:
        raise InvalidCalibrationSet(f"image {name!r} cannot be decoded: {exc}") from exc
    array = np.asarray(pixels, dtype=np.float32) / np.float32(255)
    return array[None] if mode == "L" else array.transpose(2, 0, 1)


def read_image_zip(data: bytes, model: ModelConfig, names: Sequence[str], max_rows: int) -> Parsed:
    mode, height, width = _image_geometry(model)
    if FILE_COLUMN in names:
        raise InvalidCalibrationSet(f"{FILE_COLUMN!r} names the image in {LABELS}: not a label")
    archive = open_zip(data, MAX_IMAGE_BYTES)
    members = member_names(archive)
    if LABELS not in members:
        raise InvalidCalibrationSet(f"a ZIP of images needs {LABELS} at its root")
    try:
        labels_csv = archive.read(LABELS)
    except DECODE_ERRORS as exc:
        raise InvalidCalibrationSet(f"{LABELS} cannot be extracted: {exc}") from exc
    table = read_csv_table(labels_csv, LABELS)
    check_columns(table.column_names, [FILE_COLUMN, *names], LABELS)
    check_row_count(table.num_rows, max_rows)
    files = label_strings(FILE_COLUMN, table.column(FILE_COLUMN).to_pylist()).tolist()
    _check_listing(files, members)
    x = np.stack([_decode(archive, f, mode, (width, height)) for f in files])
    return Parsed(x=x, labels={n: table.column(n).to_pylist() for n in names})
