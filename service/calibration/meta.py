"""``CalibrationMeta``: the summary stored next to a set's bytes, so listing sets and checking
that every (class, group) cell is populated need not re-parse the file."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pydantic import BaseModel, Field

from service.calibration.dataset import CalibrationSet, Format
from service.registry.models import utcnow
from service.settings import ModelConfig


class CalibrationMeta(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the uploaded bytes")
    format: Format
    filename: str | None = None
    rows: int = Field(ge=1)
    size_bytes: int = Field(ge=1)
    target: str
    bias: list[str] = Field(description="bias columns (none for a label-free job's set)")
    model: str
    created_at: datetime
    class_counts: dict[str, int] = Field(description="rows per model class name (zeros kept)")
    group_counts: dict[str, dict[str, int]] = Field(
        description="bias column -> group value -> rows"
    )


def _value_counts(values: np.ndarray) -> dict[str, int]:
    groups, counts = np.unique(values, return_counts=True)
    return {str(g): int(c) for g, c in zip(groups, counts, strict=True)}


def describe(
    cal: CalibrationSet, model: ModelConfig, target: str, filename: str | None, size_bytes: int
) -> CalibrationMeta:
    counts = np.bincount(cal.y, minlength=model.num_classes)
    return CalibrationMeta(
        sha256=cal.sha256,
        format=cal.format,
        filename=filename,
        rows=len(cal),
        size_bytes=size_bytes,
        target=target,
        bias=list(cal.bias),
        model=model.name,
        created_at=utcnow(),
        class_counts={name: int(counts[i]) for i, name in enumerate(model.classes)},
        group_counts={name: _value_counts(values) for name, values in cal.bias.items()},
    )
