"""Gateway settings: environment variables (prefix ``ERASER_``) over an optional YAML file.

The YAML file (``ERASER_CONFIG_FILE``, default ``eraser.yaml`` when present) carries the model
table, which is awkward in environment variables; secrets come from the environment. Nested
fields use ``__`` in environment names, e.g. ``ERASER_REDIS__URL``.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from service.monitoring.config import FeedbackSettings, ModelMonitoring

DEV_PLACEHOLDER = "change-me"
OIP_DEFAULT_INPUT = "input-0"  # Open Inference Protocol v2 tensor names when none is configured
OIP_DEFAULT_OUTPUT = "output-0"


class WireProtocol(StrEnum):
    """Wire protocols the upstream adapter speaks."""

    OIP_V2 = "v2"
    KSERVE_V1 = "v1"
    GENERIC = "generic"


class OutputKind(StrEnum):
    """What the upstream's numbers mean; the gateway normalises all of them to log-probabilities."""

    LOGITS = "logits"
    PROBABILITIES = "probabilities"
    LOG_PROBABILITIES = "log_probabilities"
    SIGMOID_LOGITS = "sigmoid_logits"


InputDatatype = Literal[
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
]
INPUT_DATATYPES: tuple[str, ...] = get_args(InputDatatype)


class InputSpec(BaseModel):
    """Shape of one instance. Tabular instances may be lists in ``features`` order or objects."""

    shape: list[int] = Field(description="per-instance tensor shape, e.g. [7] or [3, 28, 28]")
    features: list[str] | None = Field(
        default=None, description="feature names, in tensor order (tabular models)"
    )
    datatypes: list[InputDatatype] = Field(
        default_factory=lambda: list(INPUT_DATATYPES),
        min_length=1,
        description="OIP datatypes the v2 route accepts for the input tensor; values are "
        "converted to float32, which the upstream call and the patches take",
    )

    @model_validator(mode="after")
    def _features_match_shape(self) -> InputSpec:
        if any(d <= 0 for d in self.shape):
            raise ValueError("input shape dimensions must be positive")
        if self.features is not None and [len(self.features)] != self.shape:
            raise ValueError(f"{len(self.features)} feature names for input shape {self.shape}")
        return self


class UpstreamConfig(BaseModel):
    """How to reach one black box and read its answer."""

    url: str = Field(description="full inference URL, e.g. http://host:8080/v2/models/m/infer")
    protocol: WireProtocol = Field(
        default=WireProtocol.OIP_V2,
        description="v2 (Open Inference Protocol), v1 (KServe instances/predictions), generic",
    )
    output_kind: OutputKind = Field(
        default=OutputKind.LOGITS,
        description="what the numbers mean: logits, probabilities, log_probabilities, "
        "sigmoid_logits (one logit per row)",
    )
    output_datatype: Literal["FP16", "FP32", "FP64"] | None = Field(
        default=None,
        description="OIP datatype of the output tensor the gateway's v2 and gRPC answers carry "
        "and their model metadata reports (scores are cast to it); unset: each answer keeps "
        "the upstream's own float datatype and the metadata reports FP32",
    )
    input_name: str = Field(default=OIP_DEFAULT_INPUT, description="OIP v2 input tensor name")
    output_name: str | None = Field(
        default=None,
        description="OIP v2 output tensor to read and to request (e.g. MLServer's "
        "predict_proba); the first one if unset",
    )
    binary_data: bool = Field(
        default=False,
        description="v2 only: send the input as binary tensor data (Inference-Header-Content-"
        "Length, Triton's extension) and ask for the output as binary data; for upstreams that "
        "support it (Triton, KServe), it saves the JSON encoding of every value both ways",
    )
    request_template: dict[str, Any] | None = Field(
        default=None,
        description='generic protocol: JSON body with the string "$instances" where rows go',
    )
    response_path: str | None = Field(
        default=None, description="generic protocol: dotted path to the scores, e.g. result.scores"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra HTTP headers on every upstream call"
    )
    connect_timeout_s: float = Field(
        default=1.0, gt=0, description="seconds allowed to open a connection to the upstream"
    )
    read_timeout_s: float = Field(
        default=5.0, gt=0, description="seconds allowed to read the upstream's answer"
    )
    max_connections: int = Field(default=256, ge=1, description="pooled HTTP connections per model")
    retries: int = Field(default=2, ge=0, description="extra attempts after a retryable failure")
    retry_backoff_s: float = Field(
        default=0.05,
        description="seconds: upper bound of the first jittered retry wait (the bound doubles "
        "with each further retry)",
    )
    breaker_threshold: int = Field(
        default=5, ge=1, description="consecutive failures that open the circuit breaker"
    )
    breaker_reset_s: float = Field(
        default=0.25,
        gt=0,
        description="seconds the circuit stays open after it opens, before it admits one trial "
        "call; each failed trial multiplies the period by breaker_backoff_factor up to "
        "breaker_max_reset_s, a successful one closes the circuit and starts over (every "
        "period is shortened by up to 10 % at random, so replicas do not probe in step)",
    )
    breaker_backoff_factor: float = Field(
        default=2.0, ge=1, description="growth of the open period after each failed trial call"
    )
    breaker_max_reset_s: float = Field(
        default=5.0,
        gt=0,
        description="seconds: the longest open period, so a black box that stays down gets one "
        "trial call per this period and callers wait at most about this long once it is back",
    )

    @model_validator(mode="after")
    def _generic_needs_shape(self) -> UpstreamConfig:
        generic = self.protocol is WireProtocol.GENERIC
        if generic and not (self.request_template and self.response_path):
            raise ValueError("generic protocol needs request_template and response_path")
        return self

    @model_validator(mode="after")
    def _binary_data_is_oip_v2(self) -> UpstreamConfig:
        if self.binary_data and self.protocol is not WireProtocol.OIP_V2:
            raise ValueError(f"binary_data is an OIP v2 extension; protocol is {self.protocol}")
        return self

    @model_validator(mode="after")
    def _breaker_cap_covers_first_period(self) -> UpstreamConfig:
        if self.breaker_max_reset_s < self.breaker_reset_s:
            raise ValueError(
                f"breaker_max_reset_s ({self.breaker_max_reset_s}) is below breaker_reset_s "
                f"({self.breaker_reset_s}), the first open period"
            )
        return self


class ModelConfig(BaseModel):
    """One debiased model: what callers name, where its black box is, what it outputs."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$", description="what callers put in `model` or the v2 URL"
    )
    upstream: UpstreamConfig = Field(description="where the black box is and how to read it")
    classes: list[str] = Field(
        min_length=1,
        description="class names in the upstream's order (sigmoid models: [negative, positive])",
    )
    input: InputSpec = Field(description="the per-instance input the black box takes")
    on_patch_failure: Literal["error", "raw"] = Field(
        default="error",
        description="if a patch cannot run: answer 503, or the raw output with debiased=false",
    )
    monitoring: ModelMonitoring = Field(
        default_factory=ModelMonitoring,
        description="protected attributes callers may report for bias monitoring only",
    )

    @property
    def positive_class(self) -> int:
        """Index of the decision that bias metrics count as positive."""
        name = self.monitoring.positive_class
        return self.classes.index(name) if name is not None else len(self.classes) - 1

    @property
    def num_classes(self) -> int:
        """K: sigmoid models with one label are the 2-class pair (not-y, y)."""
        return len(self.classes)

    @property
    def output_width(self) -> int:
        """Columns of the upstream's output tensor: one logit for sigmoid models, else K."""
        return 1 if self.upstream.output_kind is OutputKind.SIGMOID_LOGITS else self.num_classes

    @property
    def output_name(self) -> str:
        """The output tensor's name on the v2 route (the upstream's, or the protocol default)."""
        return self.upstream.output_name or OIP_DEFAULT_OUTPUT

    @model_validator(mode="after")
    def _sigmoid_is_binary(self) -> ModelConfig:
        if self.upstream.output_kind is OutputKind.SIGMOID_LOGITS and len(self.classes) != 2:
            raise ValueError("sigmoid_logits models need exactly two class names (negative first)")
        if self.upstream.output_kind is not OutputKind.SIGMOID_LOGITS and len(self.classes) < 2:
            raise ValueError("a model needs at least two classes")
        return self

    @model_validator(mode="after")
    def _positive_class_is_a_class(self) -> ModelConfig:
        positive = self.monitoring.positive_class
        if positive is not None and positive not in self.classes:
            raise ValueError(f"monitoring.positive_class '{positive}' is not in {self.classes}")
        return self


class RedisSettings(BaseModel):
    """The Redis that holds the registry, calibration sets, the job queue and feedback."""

    url: str = Field(default="redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL")
    key_prefix: str = Field(default="eraser", description="every registry key starts with this")
    socket_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="seconds any Redis call may wait (serving predictions never touches Redis)",
    )
    connect_timeout_s: float = Field(
        default=2.0, gt=0, description="seconds allowed to open a Redis connection"
    )


class RuntimeSettings(BaseModel):
    """How patches run and how each replica follows the registry."""

    use_gpu: bool = Field(default=True, description="use CUDA when present and the patch allows")
    gpu_min_input_elements: int = Field(
        default=256,
        ge=0,
        description="patches whose per-instance input has fewer elements stay on the CPU "
        "provider even when CUDA is used: a CUDA call's fixed launch and copy cost exceeds a "
        "tabular MLP's whole CPU run; 256 keeps tabular inputs on the CPU and sends images of "
        "MNIST size and up to CUDA (0: every allowed patch on CUDA)",
    )
    intra_op_threads: int = Field(
        default=1,
        ge=0,
        description="ONNX Runtime intra-op threads per patch session; 0: ORT's default",
    )
    inference_threads: int = Field(
        default=4,
        ge=1,
        description="thread pool for patch inference (hot-loads and operator uploads build "
        "their sessions on a separate thread, never on this pool)",
    )
    inline_patch_max_ms: float = Field(
        default=0.2,
        ge=0,
        description="milliseconds: stacks estimated faster than this run on the event loop while "
        "the upstream call is in flight (a thread hop costs ~0.1 ms); slower ones run in the "
        "thread pool",
    )
    poll_interval_s: float = Field(
        default=2.0, gt=0, description="seconds between polls of the registry revision"
    )
    max_alpha: float = Field(
        default=4.0,
        ge=0,
        le=10,
        description="largest patch strength α a replica serves and the registry activates "
        "(PUT /models/{m}/stack, a job's activation; the default α grid of jobs ends at 2)",
    )
    batch_max_rows: int = Field(
        default=256,
        ge=0,
        description="rows per coalesced upstream call; requests arriving while earlier ones are "
        "in flight share the next call (no waiting window). 0 turns batching off",
    )
    batch_max_in_flight: int = Field(
        default=4, ge=1, description="upstream calls in flight per model when batching"
    )


class TrainingSettings(BaseModel):
    """Calibration uploads and the training job queue (read by the gateway and by workers)."""

    queue: str = Field(default="eraser-training", description="RQ queue name")
    max_calibration_rows: int = Field(default=100_000, ge=1, description="rows per calibration set")
    max_calibration_mb: float = Field(
        default=64, gt=0, description="largest calibration upload, in MiB"
    )
    job_timeout_s: int = Field(
        default=3600, ge=1, description="seconds; a job running longer is killed"
    )
    retries: int = Field(
        default=1, ge=0, description="re-runs after a transient failure (never after bad input)"
    )
    retry_interval_s: int = Field(
        default=30,
        ge=0,
        description="seconds to wait before a re-run (a black box that is down may recover)",
    )
    result_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="seconds job records are kept"
    )
    torch_threads: int = Field(
        default=1,
        ge=0,
        description="PyTorch threads per job (0: PyTorch's default, one per core); patch nets "
        "are small, and on shared cores extra threads spin and slow every process down, so "
        "scale with more workers instead",
    )
    query_batch_size: int = Field(default=256, ge=1, description="rows per black-box call")
    query_concurrency: int = Field(default=4, ge=1, description="black-box calls in flight")
    cache_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="seconds before cached black-box outputs expire"
    )


class LimitSettings(BaseModel):
    """Request bodies are refused (413) while they are read, before they are parsed."""

    predict_body_mb: float = Field(
        default=16,
        gt=0,
        description="largest body of POST /predict and POST /v2/models/{m}/infer, and largest "
        "gRPC ModelInfer message, in MiB",
    )
    json_body_mb: float = Field(
        default=1, gt=0, description="largest body of every other route that takes JSON, in MiB"
    )
    upload_overhead_mb: float = Field(
        default=1,
        gt=0,
        description="MiB of room for the form fields next to an uploaded file (on top of "
        "max_artifact_mb and training.max_calibration_mb)",
    )


class GrpcSettings(BaseModel):
    """OIP v2 over gRPC (``GRPCInferenceService``): its own port, the HTTP routes' process and loop.

    Its largest request message is ``limits.predict_body_mb``, the HTTP inference routes' body
    limit."""

    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="gRPC port (Triton's is 8001); unset: no gRPC service. 0 picks a free port "
        "(tests). Each of several workers binds the same port (SO_REUSEPORT)",
    )
    host: str | None = Field(
        default=None,
        description="gRPC bind address; unset: the address `eraser-gateway serve --host` binds "
        "(127.0.0.1 outside `serve`)",
    )


class GatewaySettings(BaseSettings):
    """Everything the gateway reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="ERASER_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    environment: Literal["development", "production"] = Field(
        default="development", description="production refuses placeholder secrets"
    )
    models: list[ModelConfig] = Field(
        default_factory=list, description="one entry per debiased model (below)"
    )
    redis: RedisSettings = RedisSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    training: TrainingSettings = TrainingSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    limits: LimitSettings = LimitSettings()
    grpc: GrpcSettings = GrpcSettings()
    signing_key: SecretStr = Field(
        default=SecretStr(DEV_PLACEHOLDER),
        description="HMAC key shared by gateways and trainers; never stored in Redis",
    )
    predict_api_key: SecretStr = Field(
        default=SecretStr(DEV_PLACEHOLDER), description="credential of the prediction routes"
    )
    admin_api_key: SecretStr = Field(
        default=SecretStr(DEV_PLACEHOLDER + "-admin"),
        description="credential of the operator routes; must differ from the prediction key",
    )
    feedback_api_key: SecretStr | None = Field(
        default=None, description="optional key for POST /feedback (the admin key works too)"
    )
    max_batch: int = Field(
        default=1024, ge=1, description="most instances in one request; more are refused"
    )
    max_artifact_mb: float = Field(
        default=256, gt=0, description="largest patch artifact an operator may upload, in MiB"
    )

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        names = [m.name for m in models]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate model names in {names}")
        return models

    @model_validator(mode="after")
    def _no_placeholder_secrets_in_production(self) -> GatewaySettings:
        if self.environment == "production":
            for name in ("signing_key", "predict_api_key", "admin_api_key"):
                if getattr(self, name).get_secret_value().startswith(DEV_PLACEHOLDER):
                    raise ValueError(f"{name} must be set in production")
        if self.predict_api_key.get_secret_value() == self.admin_api_key.get_secret_value():
            raise ValueError("predict and admin API keys must differ")
        return self

    def model(self, name: str) -> ModelConfig | None:
        for model in self.models:  # a handful of models: a scan beats keeping an index in sync
            if model.name == name:
                return model
        return None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("ERASER_CONFIG_FILE", "eraser.yaml")
        yaml = YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file)
        return init_settings, env_settings, dotenv_settings, yaml, file_secret_settings
