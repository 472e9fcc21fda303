"""Registry records: patch manifests and active stacks (docs/design.md, "Registry")."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.patch_contract import PATCH_INPUT

PatchKind = Literal["eraser", "poisoner", "poisoner-eraser", "fmd", "custom"]
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
STATUS_RE = re.compile(r"^[a-z][a-z_]{0,31}$")
VALIDATED, REJECTED = "validated", "rejected"
APPROVED = "approved"  # uploaded by an operator through the admin API; the gate never judged it
UNVERIFIED = "unverified"  # a stored status that fails its signature: edited outside the registry
SERVABLE = frozenset({VALIDATED, APPROVED})  # the only statuses a stack entry may have


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
    """A model's active stack at one revision; revision 0 is the empty initial stack.

    Signed like a manifest: what is served (entries, α) and in which order (revision) decides
    what users get, so a Redis writer without the key must not be able to change either."""

    model: str
    revision: int = Field(default=0, ge=0)
    entries: list[StackEntry] = Field(default_factory=list)
    updated_at: datetime | None = None
    reason: str = ""
    signature: str = Field(default="", description="HMAC-SHA256 over the rest of the record")

    def signed_payload(self) -> bytes:
        from service.registry.signing import canonical_json

        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))


class StackEvent(BaseModel):
    """Announced on pub/sub after every successful compare-and-set."""

    model: str
    revision: int


class VersionStatus(BaseModel):
    """A verdict on a version (the gate's, or "approved" for an operator's upload), kept beside
    the immutable manifest and signed with it in mind: ``signed_payload`` binds the verdict to
    (name, version), so a status copied from another version does not verify either."""

    status: str = Field(pattern=STATUS_RE.pattern)
    reason: str = ""
    updated_at: str = Field(default_factory=lambda: utcnow().isoformat())

    def signed_payload(self, name: str, version: int) -> bytes:
        from service.registry.signing import canonical_json

        fields = self.model_dump(mode="json")
        return canonical_json(fields | {"patch": name, "version": version})

    def as_mapping(self, signature: str) -> dict[str, str]:
        return self.model_dump(mode="json") | {"signature": signature}


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
