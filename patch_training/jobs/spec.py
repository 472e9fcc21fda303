"""What a training job is asked to do, and what it answers: the edge of the training API.

The same spec arrives from ``eraser train distill`` flags, from ``POST /patches`` (JSON next to
the uploaded file) and, serialised, in the job queue; the result is what ``GET /jobs/{id}``
shows.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from patch_training.gate import GateConfig
from service.registry.models import NAME_PATTERN

Arch = Literal["auto", "mlp", "cnn", "resnet18"]


class DistillJobSpec(BaseModel):
    """An Eraser distillation job (kind ``eraser``): one patch per bias column, stacked."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["eraser"] = "eraser"
    model: str = Field(description="gateway model name whose black box is debiased")
    target: str = Field(description="target column (class names or indices 0..K-1)")
    bias: list[str] = Field(min_length=1, description="bias columns; one patch each")
    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="patch name (default '{model}-{bias}')"
    )
    calibration_set_id: str | None = Field(
        default=None, description="sha256 of a stored calibration set (set by the uploader)"
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
    epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=20, ge=1, description="early-stopping epochs without progress")
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    alpha_grid: list[float] | None = Field(default=None, description="α values to try")
    gate: GateConfig = GateConfig()
    activate: bool = Field(default=False, description="activate if the validation gate passes")

    @field_validator("bias", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

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
    holdout: dict[str, dict[str, float]] = Field(description="raw / fair / alpha_1 metrics, %")


class DistillResult(BaseModel):
    calibration_set_id: str
    rows: int
    holdout_rows: int = Field(description="rows α and the gate were judged on (out of fold)")
    cached_outputs: bool = Field(description="black-box answers came from the cache")
    patches: list[PatchOutcome]
    stack_revision: int | None = Field(default=None, description="set when activated")
    timings_s: dict[str, float]
