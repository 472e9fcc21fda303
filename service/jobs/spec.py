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
ClassOffset = Literal["auto", "raw_shares", "none"]
DEFAULT_ALPHA_GRID = [i / 8 for i in range(17)]  # 0, 0.125, ..., 2


class GateConfig(BaseModel):
    """When a patch counts as helping: judged on the verdict rows (which decided nothing else),
    on the bootstrap interval of each change, in percentage points."""

    model_config = ConfigDict(extra="forbid")

    min_bias_reduction_pp: float = Field(
        default=1.0, description="EO bias must fall by at least this many points (lower bound)"
    )
    max_acc_drop_pp: float = Field(
        default=5.0, ge=0, description="accuracy may fall by at most this (upper bound)"
    )
    max_avg_acc_drop_pp: float = Field(
        default=5.0, ge=0, description="average-group accuracy may fall by at most this"
    )
    confidence: float = Field(
        default=0.9,
        gt=0.5,
        lt=1,
        description="of the two-sided intervals; each threshold is then a one-sided check at "
        "(1 + confidence) / 2 (95 % by default)",
    )
    bootstrap_draws: int = Field(default=2000, ge=100, le=100_000, description="resamples")


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
    verdict_fraction: float = Field(
        default=0.3,
        ge=0.1,
        le=0.6,
        description="share of every (target, bias) cell set aside for the gate's verdict: "
        "never used to fit, stop early or choose α",
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
    class_offset: ClassOffset = Field(
        default="auto",
        description="per-class log offset δ(α) with α: 'raw_shares' keeps the raw model's "
        "class shares of decisions on the tuning rows (the patch then moves decisions between "
        "groups, not towards the minority class), 'none' is the plain ℓ − α log G, 'auto' lets "
        "the α rule pick among both (EO capped by the offset curve's α = 1); baked into the "
        "exported graph",
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


class Interval(BaseModel):
    """A metric (percent) or a change (points): estimate and bootstrap interval."""

    estimate: float
    low: float
    high: float


class Evidence(BaseModel):
    """What the gate decided on: the served artifact on the verdict rows."""

    rows: int = Field(description="verdict rows: used for nothing but this")
    confidence: float
    draws: int
    raw: dict[str, Interval]
    fair: dict[str, Interval]
    change: dict[str, Interval] = Field(description="fair − raw, points")
    groups: dict[str, dict[str, Interval]] = Field(description="stage → group → accuracy")
    group_rows: dict[str, int]
    comparable_classes: int | None = Field(
        default=None,
        description="target classes with verdict rows from ≥ 2 bias groups (EO averages over "
        "them; with none, EO bias cannot be measured)",
    )


class PatchOutcome(BaseModel):
    """One registered patch version and the gate's verdict on it."""

    name: str
    version: int
    bias: str
    status: Literal["validated", "rejected"]
    reason: str
    alpha: float
    activated: bool = False
    evidence: Evidence
    rows_per_group_needed: int | None = Field(
        default=None, description="when the evidence was not enough: verdict rows per group"
    )
    tuning: dict[str, dict[str, float]] = Field(
        description="raw / fair / alpha_1 metrics on the tuning rows, out of fold (what chose α)"
    )


class JobResult(BaseModel):
    """What a finished job answers (``GET /jobs/{id}``, ``eraser train``)."""

    method: Method
    calibration_set_id: str
    rows: int
    tuning_rows: int = Field(description="rows that fitted the nets and chose α")
    verdict_rows: int = Field(description="rows the gate judged on, used for nothing else")
    cached_outputs: bool = Field(description="black-box answers came from the cache")
    cache_entry_refused: str | None = Field(
        default=None,
        description="why a cached black-box answer was not trusted (bad MAC, unreadable, wrong "
        "shape, non-finite): the black box was queried again and the entry replaced; someone "
        "may be writing to Redis",
    )
    patches: list[PatchOutcome]
    stack_revision: int | None = Field(default=None, description="set when activated")
    timings_s: dict[str, float]
