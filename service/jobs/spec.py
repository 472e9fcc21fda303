"""What a training job is asked to do, and what it answers: the contract between the gateway and
the training workers.

The gateway validates a spec (and the upload it names) before anything is stored or queued, so
the spec lives with the gateway; workers, the ``eraser train`` CLI and the fit loop read the
same fields. Every training default is defined here, once.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.registry.models import NAME_PATTERN

Method = Literal["eraser"]
METHODS: tuple[Method, ...] = ("eraser",)
Arch = Literal["auto", "mlp", "cnn", "resnet18"]
Device = Literal["auto", "cpu", "cuda"]
DEFAULT_ALPHA_GRID = [i / 8 for i in range(17)]  # 0, 0.125, ..., 2


class GateConfig(BaseModel):
    """When a patch counts as helping (both in percentage points, judged out of fold)."""

    model_config = ConfigDict(extra="forbid")

    min_bias_reduction_pp: float = Field(
        default=1.0, description="EO bias must fall by at least this many points"
    )
    max_avg_acc_drop_pp: float = Field(
        default=2.0, ge=0, description="average-group accuracy may fall by at most this"
    )


class TrainingJobSpec(BaseModel):
    """A patch-training job: one patch per bias column, stacked when activated."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(default="eraser", description="how the patch is built")
    model: str = Field(description="gateway model name whose black box is debiased")
    target: str = Field(description="target column (class names or indices 0..K-1)")
    bias: list[str] = Field(min_length=1, description="bias columns; one patch each")
    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="patch name (default '{model}-{bias}')"
    )
    calibration_set_id: str | None = Field(
        default=None, description="sha256 of a stored calibration set (set by the gateway)"
    )
    folds: int = Field(
        default=4,
        ge=1,
        le=10,
        description="cross-fitting folds: α and the gate are judged on every row, by the net "
        "that did not see it, and the patch serves all fold nets; 1 = one held-out part",
    )
    holdout_fraction: float = Field(
        default=0.25, gt=0, lt=1, description="the held-out part when folds = 1"
    )
    arch: Arch = Field(default="auto", description="auto: MLP for [F] inputs, small CNN for images")
    hidden: list[int] = Field(default=[64, 64], description="MLP hidden widths")
    epochs: int = Field(default=300, ge=1, description="most passes over the fit rows")
    patience: int = Field(default=20, ge=1, description="early-stopping epochs without progress")
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=3e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(default=1e-4, ge=0, description="AdamW weight decay")
    seed: int = Field(default=0, description="folds, initial weights and shuffling")
    device: Device = "auto"
    alpha_grid: list[float] = Field(
        default_factory=lambda: list(DEFAULT_ALPHA_GRID),
        min_length=1,
        description="α values to try (0 and 1 are always tried)",
    )
    gate: GateConfig = GateConfig()
    activate: bool = Field(default=False, description="activate if the validation gate passes")

    @field_validator("bias", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("alpha_grid")
    @classmethod
    def _alphas_in_range(cls, grid: list[float]) -> list[float]:
        if any(not 0.0 <= a <= 10.0 for a in grid):
            raise ValueError("every α must be in [0, 10], the range a stack accepts")
        return grid

    def patch_name(self, bias_column: str) -> str:
        """The registry name of the patch for ``bias_column``."""
        if self.name and len(self.bias) == 1:
            return self.name
        base = f"{self.name or self.model}-{bias_column}"
        return re.sub(r"[^A-Za-z0-9_.-]", "_", base)[:64]


class PatchOutcome(BaseModel):
    """One registered patch version and the gate's verdict on it."""

    name: str
    version: int
    bias: str
    status: Literal["validated", "rejected"]
    reason: str
    alpha: float
    activated: bool = False
    out_of_fold: dict[str, dict[str, float]] = Field(
        description="raw / fair / alpha_1 metrics on the judged rows, %"
    )


class JobResult(BaseModel):
    """What a finished job answers (``GET /jobs/{id}``, ``eraser train``)."""

    method: Method
    calibration_set_id: str
    rows: int
    judged_rows: int = Field(description="rows α and the gate were judged on (out of fold)")
    cached_outputs: bool = Field(description="black-box answers came from the cache")
    patches: list[PatchOutcome]
    stack_revision: int | None = Field(default=None, description="set when activated")
    timings_s: dict[str, float]
