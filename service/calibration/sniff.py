"""Which format an upload is in, judged by its bytes: file names are often wrong or missing."""

from __future__ import annotations

import codecs
import io
import zipfile

from service.calibration.dataset import Format
from service.errors import InvalidCalibrationSet

ACCEPTED = (
    "accepted formats are CSV (UTF-8 text with a header row), Parquet, NPZ (numpy.savez) "
    "and a ZIP of images with labels.csv"
)
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
TEXT_PROBE = 64 * 1024


def _looks_like_text(data: bytes) -> bool:
    """UTF-8 without NUL bytes at the start; the CSV reader decodes the rest."""
    head = data[:TEXT_PROBE]
    if b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _zip_kind(data: bytes, filename: str | None) -> Format:
    """NPZ when every member is an .npy array; a ZIP of images when labels.csv is there; the
    extension decides only an archive that is neither, so its error message fits the intent."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [i.filename for i in archive.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidCalibrationSet(f"the ZIP archive cannot be read: {exc}") from exc
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    if "labels.csv" in names:
        return "zip"
    return "npz" if (filename or "").lower().endswith(".npz") else "zip"


def detect_format(data: bytes, filename: str | None = None) -> Format:
    if not data:
        raise InvalidCalibrationSet(f"the calibration file is empty: {ACCEPTED}")
    if data.startswith(b"PAR1"):
        return "parquet"
    if data.startswith(ZIP_MAGIC):
        return _zip_kind(data, filename)
    if _looks_like_text(data):
        return "csv"
    named = f" {filename!r}" if filename else ""
    raise InvalidCalibrationSet(f"the calibration file{named} is not in a known format: {ACCEPTED}")
