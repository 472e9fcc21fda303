"""What a training job is asked to do, and what it answers: the contract between the gateway and
the training workers.

The gateway validates a spec (and the upload it names) before anything is stored or queued, so
the spec lives with the gateway; workers, the ``eraser train`` CLI and the fit loop read the
same fields. Every training default is defined here, once.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.registry.models import NAME_PATTERN

Method = Literal["eraser", "poisoner", "fmd"]
METHODS: tuple[Method, ...] = ("eraser", "poisoner", "fmd")
LABEL_FREE_METHODS: tuple[Method, ...] = ("poisoner",)  # bias columns for evaluation only
ATTRIBUTE_INPUT_METHODS: tuple[Method, ...] = ("fmd",)  # the bias column is a model input
PoisonerCandidate = Literal["poisoner", "poisoner-eraser"]
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


class PoisonerConfig(BaseModel):
    """The Poisoner's biased model f_B (``method: "poisoner"``; docs/poisoner.md): trained on
    x and y only, by guided label poisoning (Alg. 1), then served as a patch two ways."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=1500, ge=1, le=1_000_000, description="f_B training steps per fold")
    batch_size: int = Field(
        default=64, ge=2, le=65_536, description="class-balanced mini-batch (by target)"
    )
    p: float = Field(
        default=10.0,
        gt=0,
        lt=100,
        description="percent of each batch flagged bias-conflicting and poisoned (paper: 5-20)",
    )
    lr: float = Field(default=1e-3, gt=0, description="Adam learning rate")
    loss: Literal["poison", "gce"] = Field(
        default="poison",
        description="'poison': guided label poisoning (Alg. 1); 'gce': generalized "
        "cross-entropy on the clean labels, no poisoning (the ablation)",
    )
    warmup_steps: int = Field(
        default=0, ge=0, description="plain cross-entropy steps before poisoning starts"
    )
    q: float = Field(
        default=0.7, gt=0, le=1, description="the GCE exponent (loss 'gce' only; LfF's 0.7)"
    )
    contrast_temperature: float = Field(
        default=1.0,
        gt=0,
        le=100,
        description="τ of the contrastive score d_con (Eq. 4; the paper writes none: 1)",
    )
    candidates: list[PoisonerCandidate] = Field(
        default_factory=lambda: ["poisoner", "poisoner-eraser"],
        min_length=1,
        description="serving modes built from the one f_B training and judged by the gate: "
        "'poisoner' (tempered log f_B), 'poisoner-eraser' (the Eraser on f_B's predicted "
        "class as a pseudo bias label); the job keeps the one its gate prefers",
    )

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, value: list[PoisonerCandidate]) -> list[PoisonerCandidate]:
        if len(set(value)) != len(value):
            raise ValueError(f"candidates are listed more than once: {value}")
        return value


class FmdConfig(BaseModel):
    """FMD's unlearning patch (``method: "fmd"``; docs/fmd.md): a surrogate distilled from the
    black box, the calibration rows that make it counterfactually biased found by influence
    functions, and one Newton step that replaces them by their counterfactuals."""

    model_config = ConfigDict(extra="forbid")

    hidden: list[int] = Field(
        default=[64, 32],
        min_length=1,
        description="surrogate MLP hidden widths; the last is the penultimate representation "
        "the linear top layer (and the unlearning step) works on",
    )
    epochs: int = Field(default=200, ge=1, description="most distillation epochs per fold")
    l2: float = Field(
        default=1e-3,
        gt=0,
        le=1.0,
        description="λ: the top layer is refitted with the penalty (λ·n/2)‖θ‖², so its "
        "Hessian is H = Σ (diag p − ppᵀ) ⊗ h̃h̃ᵀ + λ·n·I exactly",
    )
    k_grid: list[float] = Field(
        default_factory=lambda: [0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5],
        min_length=1,
        description="K, the harmful rows replaced, as fractions of each fold's fit rows (only "
        "rows of positive influence count); 0, no update, is always tried; chosen on the "
        "tuning rows out of fold",
    )
    targets: Literal["labels", "black_box"] = Field(
        default="labels",
        description="the loss whose influence is ranked and whose gradient the Newton step "
        "uses: 'labels' cross-entropy to the target y (the paper), 'black_box' to the black "
        "box's answer on the original row",
    )
    max_avg_acc_drop_pp: float = Field(
        default=1.0,
        ge=0,
        description="a K is only chosen if the out-of-fold average-group accuracy at α = 1 "
        "falls by at most this many points",
    )

    @field_validator("k_grid")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0.0 <= k <= 1.0 for k in value):
            raise ValueError("every K is a fraction of the fit rows, in [0, 1]")
        return sorted(set(value))


class ExportConfig(BaseModel):
    """How the trained patch is serialised (patch_training/export; docs/operations.md#gpu)."""

    model_config = ConfigDict(extra="forbid")

    fp16: bool = Field(
        default=False,
        description="register the patch with float16 weights and arithmetic (float32 input and "
        "output), for image patches on GPUs; the job fails instead if its log_bias differs from "
        "the float32 export's by more than 0.02 on the calibration rows checked",
    )


class TrainingJobSpec(BaseModel):
    """A patch-training job: one patch per bias column, stacked when activated."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(default="eraser", description="how the patch is built")
    model: str = Field(description="gateway model name whose black box is debiased")
    target: str = Field(description="target column (class names or indices 0..K-1)")
    bias: list[str] = Field(
        default_factory=list,
        description="bias columns; one patch each (eraser: at least one). method 'poisoner': "
        "optional, at most one, used only to evaluate (gate and report), never to train. "
        "method 'fmd': the attribute whose counterfactual influence is unlearned, an input "
        "column of the model (set to its other values) or, with uploaded pairs, a column of "
        "the file; other methods refuse input columns",
    )
    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, description="patch name (default '{model}-{bias}')"
    )
    calibration_set_id: str | None = Field(
        default=None, description="sha256 of a stored calibration set (set by the gateway)"
    )
    pairs_id: str | None = Field(
        default=None,
        description="method 'fmd': sha256 of the stored counterfactual pairs NPZ (x_cf or "
        "x_cf_<bias column>) for bias columns that are not inputs (set by the gateway)",
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
    poisoner: PoisonerConfig = Field(
        default_factory=PoisonerConfig, description="method 'poisoner' only: f_B and its modes"
    )
    fmd: FmdConfig = Field(
        default_factory=FmdConfig,
        description="method 'fmd' only: the surrogate, λ, the K grid (the bias column is an "
        "input column of the model, set to its other values, or comes with uploaded pairs)",
    )
    activate: bool = Field(default=False, description="activate if the validation gate passes")
    export: ExportConfig = Field(default_factory=ExportConfig, description="the ONNX export")

    @field_validator("bias", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bias_columns_for_the_method(self) -> TrainingJobSpec:
        if self.method not in LABEL_FREE_METHODS and not self.bias:
            raise ValueError(f"method {self.method!r} needs at least one bias column")
        if self.pairs_id is not None and self.method not in ATTRIBUTE_INPUT_METHODS:
            raise ValueError(f"pairs_id: method {self.method!r} takes no counterfactual pairs")
        if self.label_free:
            if len(self.bias) > 1:
                raise ValueError(
                    f"method {self.method!r} takes at most one bias column (evaluation only), "
                    f"got {self.bias}"
                )
            if self.folds < 2 and "poisoner-eraser" in self.poisoner.candidates:
                raise ValueError(
                    "the 'poisoner-eraser' candidate needs cross-fitting (folds >= 2): every "
                    "row's pseudo bias label comes from an f_B that did not see it"
                )
        return self

    @property
    def bias_is_input(self) -> bool:
        """The bias column may be one of the model's inputs (FMD: counterfactuals set it to its
        other values; a column that is not an input needs uploaded pairs)."""
        return self.method in ATTRIBUTE_INPUT_METHODS

    @property
    def label_free(self) -> bool:
        """The method trains on x and y only; bias columns are evaluation only (optional)."""
        return self.method in LABEL_FREE_METHODS

    @field_validator("alpha_grid")
    @classmethod
    def _alphas_in_range(cls, grid: list[float]) -> list[float]:
        if any(not 0.0 <= a <= 10.0 for a in grid):
            raise ValueError("every α must be in [0, 10], the range a stack accepts")
        return grid

    def patch_name(self, bias_column: str | None) -> str:
        """The registry name of the patch for ``bias_column``; a label-free job builds one
        patch, ``{model}-{method}`` by default, whether or not a column evaluates it."""
        if self.name and (len(self.bias) <= 1 or self.label_free):
            return self.name
        if self.label_free or bias_column is None:
            return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{self.model}-{self.method}")[:64]
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


class Candidate(BaseModel):
    """A patch a job built and judged but may not have kept (method 'poisoner')."""

    kind: str
    status: Literal["validated", "rejected"]
    reason: str
    alpha: float
    fair: dict[str, float] = Field(description="estimates on the verdict rows at α, percent")
    kept: bool = False


class PatchOutcome(BaseModel):
    """One registered patch version and the gate's verdict on it."""

    name: str
    version: int
    bias: str | None = Field(description="the bias column judged on; None: pseudo-groups")
    kind: str | None = Field(default=None, description="the registered version's kind")
    groups: str | None = Field(
        default=None,
        description="what the gate's groups were, when not a bias column the method trained "
        "on (label-free methods: the bias column for evaluation only, or pseudo-groups)",
    )
    status: Literal["validated", "rejected"]
    reason: str
    alpha: float
    activated: bool = False
    not_activated: str | None = Field(
        default=None,
        description="why a validated patch was not put on the stack (a job stacks at most one: "
        "its patches are judged one by one, never as a stack)",
    )
    evidence: Evidence
    rows_per_group_needed: int | None = Field(
        default=None, description="when the evidence was not enough: verdict rows per group"
    )
    tuning: dict[str, dict[str, float]] = Field(
        description="raw / fair / alpha_1 metrics on the tuning rows, out of fold (what chose α)"
    )
    candidates: list[Candidate] = Field(
        default_factory=list, description="label-free methods: every patch built and judged"
    )
    choice: str | None = Field(default=None, description="why this candidate was kept")
    counterfactual_bias: dict[str, Any] | None = Field(
        default=None,
        description="method 'fmd': counterfactual bias of the raw and the served answers on "
        "the verdict rows (percent, bootstrap intervals; change in points) and at α = 1",
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
