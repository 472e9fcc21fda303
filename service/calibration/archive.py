"""Opening uploaded ZIPs (NPZ files are ZIPs too) without letting one expand into a memory bomb.

Sizes come from the central directory, before anything is decompressed. They can be trusted as
upper bounds: ``zipfile`` never returns more than a member's declared size (a member that
inflates further fails its CRC check instead).
"""

from __future__ import annotations

import io
import zipfile

from service.errors import InvalidCalibrationSet

MAX_TOTAL_BYTES = 1024**3  # everything in one upload, uncompressed (16x the default upload limit)


def open_zip(data: bytes, max_member_bytes: int) -> zipfile.ZipFile:
    """The archive, refused when any member or the whole would inflate beyond the bounds."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidCalibrationSet(f"the ZIP archive cannot be read: {exc}") from exc
    infos = archive.infolist()
    for info in infos:
        if info.file_size > max_member_bytes:
            raise InvalidCalibrationSet(
                f"ZIP member {info.filename!r} would inflate to {info.file_size} bytes, more "
                f"than the limit of {max_member_bytes}",
                member=info.filename,
            )
    total = sum(info.file_size for info in infos)
    if total > MAX_TOTAL_BYTES:
        raise InvalidCalibrationSet(
            f"the ZIP archive would inflate to {total} bytes, more than the limit of "
            f"{MAX_TOTAL_BYTES}"
        )
    return archive


def member_names(archive: zipfile.ZipFile) -> list[str]:
    """Files only: directory entries carry no data."""
    return [info.filename for info in archive.infolist() if not info.is_dir()]
