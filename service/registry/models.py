"""Registry records: patch manifests and active stacks (docs/design.md, "Registry")."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.patch_contract import PATCH_INPUT

PatchKind = Literal["eraser", "poisoner", "fmd", "custom"]
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
STATUS_RE = re.compile(r"^[a-z][a-z_]{0,31}$")
VALIDATED, REJECTED = "validated", "rejected"


def utcnow() -> datetime:
    return datetime.now(UTC)


class PatchSpec(BaseModel):
    """What an uploader says about a patch; the registry adds identity, hash and signature."""

    model_config = ConfigDict(extra="forbid")

    kind: PatchKind
    model: str = Field(description="the model (gateway model name) this patch debiases")
    classes: list[str] = Field(min_length=2, description="class order of log_bias, = the model's")
    input_name: str = Field(default=PATCH_INPUT, description="the ONNX input the gateway feeds")
    input_shape: list[int] = Field(description="per-instance input shape, e.g. [7]")
    allow_gpu: bool = Field(default=True, description="may run on the CUDA provider")
    default_alpha: float = Field(default=1.0, ge=0.0)
    training_config: dict[str, Any] = Field(default_factory=dict)
    calibration_set_id: str | None = None
    validation_metrics: dict[str, Any] = Field(default_factory=dict)


class PatchManifest(PatchSpec):
    """An immutable, signed patch version."""

    name: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    sha256: str
    size_bytes: int
    created_at: datetime
    signature: str = Field(default="", description="HMAC-SHA256 over the rest of the manifest")

    def signed_payload(self) -> bytes:
        """Canonical bytes the signature covers: every field but the signature, sorted keys."""
        from service.registry.signing import canonical_json

        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))


class StackEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patch: str = Field(pattern=NAME_PATTERN)
    version: int = Field(ge=1)
    alpha: float = Field(default=1.0, ge=0.0, le=10.0)


class Stack(BaseModel):
    """A model's active stack at one revision; revision 0 is the empty initial stack."""

    model: str
    revision: int = 0
    entries: list[StackEntry] = Field(default_factory=list)
    updated_at: datetime | None = None
    reason: str = ""


class StackEvent(BaseModel):
    """Announced on pub/sub after every successful compare-and-set."""

    model: str
    revision: int


class VersionStatus(BaseModel):
    """Mutable verdict on a version, kept outside the signed manifest (a gate or an operator)."""

    status: str = Field(pattern=STATUS_RE.pattern)
    reason: str = ""

    def as_mapping(self) -> dict[str, str]:
        return {"status": self.status, "reason": self.reason, "updated_at": utcnow().isoformat()}


class PatchReport(BaseModel):
    """A training job's report: metrics JSON and a PNG plot, stored with the version."""

    json_bytes: bytes
    png: bytes | None = None

    def as_mapping(self) -> dict[str, bytes]:
        mapping = {"json": self.json_bytes}
        return mapping if self.png is None else mapping | {"png": self.png}

    @classmethod
    def from_mapping(cls, mapping: dict[str, bytes]) -> PatchReport:
        return cls(json_bytes=mapping["json"], png=mapping.get("png"))
