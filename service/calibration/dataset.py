"""What a calibration file becomes once read: arrays a patch trainer can use directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Format = Literal["csv", "parquet", "npz", "zip"]


@dataclass(frozen=True)
class Parsed:
    """A reader's output before label checks: the model input and raw label values per column.

    Label values stay Python objects (str, int, float, None) so that every format shares one
    set of missing-value and class-mapping rules in ``labels``.
    """

    x: np.ndarray
    labels: dict[str, list[object]]


@dataclass(frozen=True, eq=False)
class CalibrationSet:
    """A validated calibration set; ``sha256`` names the exact uploaded bytes it came from.

    ``eq=False``: element-wise numpy comparison has no single truth value, so sets compare by
    identity (compare ``sha256`` to ask whether two came from the same file).
    """

    x: np.ndarray  # float32 [N, *model.input.shape], rows in file order
    y: np.ndarray  # int64 [N], index into model.classes
    bias: dict[str, np.ndarray]  # bias column -> [N] str group values
    sha256: str
    format: Format
    pairs: dict[str, np.ndarray] = field(default_factory=dict)
    # bias column -> float32 [N, M, *model.input.shape]: the uploaded counterfactuals of each
    # row (FMD, an attribute that is not an input); empty for every other set

    def __len__(self) -> int:
        return int(self.y.shape[0])
