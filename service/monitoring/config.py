"""Bias-monitoring settings: which protected attributes a model's callers may report, and how
long served decisions are kept for label feedback.

Groups are declared, not discovered: a caller cannot create Prometheus series (label values come
from this list only), and the gateway creates every series at zero when it starts, so that
``rate()`` over a window sees the first decisions too and ratios of counters stay exact.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class MonitoredAttribute(BaseModel):
    """One protected attribute (e.g. race) and the groups it may take."""

    groups: list[str] = Field(min_length=2, description="every value callers may report")
    privileged: str | None = Field(
        default=None,
        description="reference group for the signed forms (TrustyAI SPD = P(pos|g) − "
        "P(pos|privileged), DIR = their ratio); unset: only the symmetric forms",
    )

    @model_validator(mode="after")
    def _groups_are_distinct(self) -> MonitoredAttribute:
        if len(set(self.groups)) != len(self.groups):
            raise ValueError(f"duplicate groups in {self.groups}")
        if self.privileged is not None and self.privileged not in self.groups:
            raise ValueError(f"privileged group '{self.privileged}' is not in {self.groups}")
        return self


class ModelMonitoring(BaseModel):
    """Per model: attributes callers may send in ``monitor`` and the positive decision."""

    positive_class: str | None = Field(
        default=None,
        description="the decision counted as positive (fairlearn's pos_label, TrustyAI's "
        "favourable outcome); default: the last class",
    )
    attributes: dict[str, MonitoredAttribute] = Field(
        default_factory=dict,
        description="protected attribute name (the `attribute` label of the bias metrics) → "
        "its groups",
    )


class FeedbackSettings(BaseModel):
    """The served-decision store that ``POST /feedback`` reads (Redis, shared by replicas)."""

    ttl_s: int = Field(
        default=7 * 24 * 3600,
        ge=1,
        description="seconds a served decision is kept for feedback; later feedback is refused "
        "(404)",
    )
    max_requests: int = Field(
        default=200_000, ge=1, description="monitored requests kept; the oldest go first"
    )
    store_timeout_s: float = Field(
        default=0.25,
        gt=0,
        description="seconds a monitored request waits for the store; past it, the answer "
        "has no request_id (predictions never fail because of monitoring)",
    )
