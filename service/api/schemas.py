"""Request and response bodies at the HTTP edge (OpenAPI documents them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from service.monitoring.store import REQUEST_ID_CHARS, REQUEST_ID_PATTERN
from service.registry.models import PatchManifest, Stack, StackEntry


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    instances: list[Any] = Field(
        description="lists shaped like the model's input, or objects keyed by feature name"
    )
    return_raw: StrictBool = Field(
        default=False, description="also return the upstream's probabilities"
    )
    monitor: list[dict[str, str]] | None = Field(
        default=None,
        description='monitoring only, one object per instance, e.g. {"race": "..."}: '
        "protected attributes counted in bias metrics, never sent upstream or to a patch; "
        "the answer then carries a request_id for POST /feedback",
    )


class PatchRef(BaseModel):
    name: str
    version: int
    alpha: float


class InstancePrediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    raw_probabilities: dict[str, float] | None = None


class PredictResponse(BaseModel):
    model: str
    revision: int = Field(description="the stack revision that produced every prediction here")
    patches: list[PatchRef]
    debiased: bool
    predictions: list[InstancePrediction]
    request_id: str | None = Field(
        default=None,
        description="with a monitor field: the id that POST /feedback takes (32 random hex "
        "characters)",
    )


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=REQUEST_ID_CHARS,
        max_length=REQUEST_ID_CHARS,
        pattern=REQUEST_ID_PATTERN,
        description="request_id of a monitored answer: 32 lowercase hex characters",
    )
    index: int = Field(ge=0, description="the instance's position in that request")
    label: str = Field(description="the true class name")


class FeedbackResponse(BaseModel):
    request_id: str
    index: int
    model: str
    label: str
    correct: dict[str, bool] = Field(description="per stage (raw, fair): was the decision right")


class V1PredictRequest(BaseModel):
    instances: list[Any] = Field(
        description="lists shaped like the model's input, or objects keyed by feature name"
    )


class V1PredictResponse(BaseModel):
    predictions: list[list[float]] = Field(
        description="per instance, the model's output row debiased, in the upstream's own kind "
        "(logits stay logits)"
    )


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description="BOOL, INT8-64, UINT8-64, FP16, FP32, FP64 or BYTES")
    data: list[Any] | None = Field(
        default=None,
        description="row-major values (flat or nested); absent when parameters.binary_data_size "
        "says the tensor follows the JSON as binary data",
    )
    parameters: dict[str, Any] | None = Field(
        default=None, description='binary tensor data extension: {"binary_data_size": bytes}'
    )


class V2RequestedOutput(BaseModel):
    name: str = Field(description="the model's output, or raw_<output> for the upstream's own")
    parameters: dict[str, Any] | None = Field(
        default=None, description='{"binary_data": true} to receive this output as binary data'
    )


class V2RequestParameters(BaseModel):
    """The request parameters the gateway reads; any others are allowed and ignored."""

    model_config = ConfigDict(extra="allow")

    return_raw: StrictBool = Field(
        default=False, description="also return the upstream's output as raw_<output>"
    )
    monitor: Any = Field(
        default=None,
        description="monitoring only: one {attribute: group} object per instance, as in "
        "/predict; the answer then carries parameters.eraser_request_id",
    )
    binary_data_output: StrictBool = Field(
        default=False,
        description="every output as binary data unless its own parameters.binary_data says "
        "otherwise (binary tensor data extension)",
    )


class V2InferRequest(BaseModel):
    id: str | None = None
    inputs: list[V2Tensor] = Field(min_length=1)
    outputs: list[V2RequestedOutput] | None = None
    parameters: V2RequestParameters | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2Tensor]
    parameters: dict[str, Any] = Field(default_factory=dict)


class StackUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: list[StackEntry]
    expected_revision: int = Field(ge=0, description="the revision you read; 409 if it moved")
    reason: str = ""
    revision_floor: int = Field(
        default=0,
        ge=0,
        le=2**53,
        description="the new revision is at least this: after Redis lost its data, the revision "
        "the replicas report + 1, so that they accept the new stack",
    )


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expected_revision: int | None = Field(default=None, ge=0)


class StackView(BaseModel):
    stack: Stack
    served_revision: int | None = Field(description="the revision this replica serves now")
    load_error: str | None = None


class PatchVersionView(BaseModel):
    manifest: PatchManifest
    status: dict[str, str]


class PatchSummary(BaseModel):
    name: str
    latest_version: int
    kind: str
    model: str
