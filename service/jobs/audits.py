"""Counterfactual bias audits: what an audit is asked (``AuditSpec``), what it answers
(``AuditResult``), and where both live in Redis (``AuditStore``).

The gateway validates the upload and the spec, stores the input files and a record, and queues
an RQ job on the training queue; ``eraser worker`` runs it (``AUDIT_FUNCTION``, imported only by
the worker) and writes the result back into the record. Everything here is plain data and
Redis: no PyTorch, no upload parsers, no training code.

Records are not signed: nothing in the gateway or in training decides anything on an audit (it
activates no patch and feeds no gate); it is information for an operator. Someone who can write
to Redis can therefore edit what ``GET /audits/{id}`` shows. Input files are content-addressed
and re-hashed on every read, so a worker never audits other bytes than were uploaded.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rq import Queue

from service.errors import AuditNotFound, IntegrityError, InvalidAuditInput
from service.jobs.spec import Interval
from service.registry.keys import RegistryKeys
from service.registry.signing import canonical_json, sha256_hex
from service.settings import TrainingSettings

AUDIT_FUNCTION = "patch_training.jobs.audit_entry.run_audit_job"  # imported by the worker only
AUDIT_ID_PATTERN = r"^audit-[0-9a-f]{16}$"
MAX_ATTRIBUTES = 16
TERMINAL = ("finished", "failed")


class AuditSpec(BaseModel):
    """A counterfactual bias audit of one model on one data file, for one or more attributes."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="gateway model name whose black box is audited")
    attributes: list[str] = Field(
        min_length=1,
        max_length=MAX_ATTRIBUTES,
        description="attributes to audit; an input column is set to each of its other values, "
        "any other attribute needs counterfactual pairs (the pairs file); several are ranked",
    )
    values: dict[str, list[float]] = Field(
        default_factory=dict,
        description="input-column attribute -> the values it can take (default: the distinct "
        "values in the data file, at most 20); a row holding another value is refused",
    )
    draws: int = Field(default=2000, ge=100, le=100_000, description="bootstrap resamples")
    confidence: float = Field(default=0.9, gt=0.5, lt=1, description="of the intervals")
    top_rows: int = Field(default=10, ge=0, le=100, description="rows that change most, listed")
    seed: int = Field(default=0, description="bootstrap resampling")
    data_id: str | None = Field(default=None, description="sha256 of the stored data file (set)")
    pairs_id: str | None = Field(default=None, description="sha256 of the stored pairs (set)")
    data_filename: str | None = None
    pairs_filename: str | None = None

    @field_validator("attributes", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("attributes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"attributes are listed more than once: {value}")
        if any(not a for a in value):
            raise ValueError("an attribute name is empty")
        return value

    @field_validator("values")
    @classmethod
    def _value_lists(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, values in value.items():
            if len(set(values)) != len(values) or len(values) < 2:
                raise ValueError(f"values of {name!r} must be at least two distinct numbers")
        return value


# ---------------------------------------------------------------------------------- results


class Histogram(BaseModel):
    edges: list[float] = Field(description="bin edges of the per-row change, probability 0..1")
    counts: list[int] = Field(description="rows per bin")


class TopRow(BaseModel):
    row: int = Field(description="0-based row of the data file")
    group: str = Field(description="the row's own value of the attribute")
    change: float = Field(description="|P(ŷ | x) − P(ŷ | x̄)|, averaged over counterfactuals")
    p_decision: float = Field(description="P(ŷ | x), ŷ the decision on the original row")
    p_counterfactual: float = Field(description="P(ŷ | x̄), mean over the counterfactuals")
    decision: str = Field(description="ŷ, the class name")
    flipped: bool = Field(description="some counterfactual's decision differs from ŷ")


class GroupAudit(BaseModel):
    rows: int
    bias: Interval = Field(description="counterfactual bias of the group's rows, percent")
    flip_share: float = Field(description="percent of the group's rows whose decision flips")


class StageAudit(BaseModel):
    """The counterfactual bias of one stage's answers (the raw black box, or what is served)."""

    bias: Interval = Field(description="B = mean over rows of |P(ŷ|x) − P(ŷ|x̄)|, percent")
    flip_share: Interval = Field(description="percent of rows whose decision flips")
    groups: dict[str, GroupAudit] = Field(description="by the row's own attribute value")
    histogram: Histogram
    top_rows: list[TopRow]


class AttributeAudit(BaseModel):
    attribute: str
    source: Literal["input_column", "pairs"] = Field(
        description="input_column: the column set to each other value; pairs: uploaded x̄"
    )
    values: list[str] | None = Field(description="input_column: the values it was set to")
    counterfactuals_per_row: int = Field(
        description="other values (input_column) or uploaded x̄ per row (pairs); B averages "
        "each row's change over them"
    )
    raw: StageAudit
    served: StageAudit | None = Field(description="the active stack's answers; None: no stack")
    change: Interval | None = Field(
        description="served − raw counterfactual bias, points, resampled with the same rows"
    )


class RankEntry(BaseModel):
    attribute: str
    raw: float = Field(description="counterfactual bias of the raw black box, percent")
    served: float | None = Field(description="of the served answers, percent")


class ServedStack(BaseModel):
    revision: int
    patches: list[dict[str, Any]] = Field(description="name, version and α of each patch")


class AuditResult(BaseModel):
    """What a finished audit answers (``GET /audits/{id}``, ``eraser audit``)."""

    model: str
    rows: int
    unit: str = "percent; intervals are bootstrap percentile intervals over rows"
    confidence: float
    draws: int
    ranking: list[RankEntry] = Field(description="attributes, most biased (raw) first")
    attributes: list[AttributeAudit] = Field(description="in ranking order")
    stack: ServedStack | None = Field(description="the stack the served answers came from")
    queried_rows: int = Field(description="rows sent to the black box (originals + x̄)")
    cached_outputs: bool = Field(description="black-box answers came from the cache")
    cache_entry_refused: str | None = None
    timings_s: dict[str, float]
    rows_per_second: float = Field(description="queried rows per second of querying")


class AuditInput(BaseModel):
    """What the upload check found, stored with the record."""

    rows: int
    attributes: dict[str, str] = Field(description="attribute -> input_column | pairs")
    values: dict[str, list[str]] = Field(description="input-column attribute -> its values")
    groups: dict[str, dict[str, int]] = Field(description="attribute -> group value -> rows")


class AuditSummary(BaseModel):
    """A line of ``GET /audits``."""

    id: str
    model: str
    attributes: list[str]
    state: str = Field(description="queued, started, finished, failed")
    created_at: datetime
    rows: int | None
    ranking: list[RankEntry] | None = Field(description="once finished")
    error: str | None


class AuditView(AuditSummary):
    """What ``GET /audits/{id}`` answers."""

    progress: dict[str, Any] | None = Field(description="stage, done, total, fraction")
    spec: AuditSpec
    input: AuditInput | None
    result: AuditResult | None
    plot_url: str | None


def new_audit_id() -> str:
    return f"audit-{uuid.uuid4().hex[:16]}"


# ---------------------------------------------------------------------------------- storage


class AuditStore:
    """Audit records and their input files, under the registry's prefix (async Redis)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, input_ttl_s: int) -> None:
        self._redis, self._keys, self._ttl = redis, RegistryKeys(prefix), input_ttl_s

    @property
    def keys(self) -> RegistryKeys:
        return self._keys

    async def put_input(self, data: bytes) -> str:
        """Content-addressed, expiring after ``input_ttl_s`` (a queued job has that long)."""
        digest = sha256_hex(data)
        await self._redis.set(self._keys.audit_input(digest), data, ex=self._ttl)
        return digest

    async def get_input(self, sha256: str) -> bytes:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
            raise InvalidAuditInput(f"{sha256!r} does not name an audit input")
        data = await self._redis.get(self._keys.audit_input(sha256))
        if data is None:
            raise InvalidAuditInput(f"audit input {sha256} is gone (expired?)", sha256=sha256)
        if sha256_hex(data) != sha256:
            raise IntegrityError(f"audit input {sha256}: hash mismatch", sha256=sha256)
        return data

    async def create(self, audit_id: str, spec: AuditSpec, found: AuditInput) -> datetime:
        created = datetime.now(UTC)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._keys.audit(audit_id),
                mapping={
                    "spec": canonical_json(spec.model_dump(mode="json")),
                    "input": canonical_json(found.model_dump(mode="json")),
                    "created_at": created.isoformat(),
                    "state": "queued",
                },
            )
            pipe.zadd(self._keys.audits(), {audit_id: created.timestamp()})
            await pipe.execute()
        return created

    async def set_state(self, audit_id: str, state: str, error: str | None = None) -> None:
        fields = {"state": state, "error": error or ""}
        await self._redis.hset(self._keys.audit(audit_id), mapping=fields)

    async def set_progress(self, audit_id: str, progress: dict[str, Any]) -> None:
        await self._redis.hset(self._keys.audit(audit_id), "progress", canonical_json(progress))

    async def put_result(self, audit_id: str, result: AuditResult, png: bytes) -> None:
        fields = {
            "result": result.model_dump_json().encode(),
            "png": png,
            "state": "finished",
            "error": "",
            "finished_at": str(time.time()),
        }
        await self._redis.hset(self._keys.audit(audit_id), mapping=fields)

    async def ids(self, limit: int) -> list[str]:
        raw = await self._redis.zrevrange(self._keys.audits(), 0, limit - 1)
        return [_text(i) for i in raw]

    async def record(self, audit_id: str, with_result: bool = True) -> dict[str, bytes]:
        if not re.fullmatch(AUDIT_ID_PATTERN, audit_id):
            raise AuditNotFound(f"no audit {audit_id[:80]!r}: not an audit id")
        fields = ["spec", "input", "created_at", "state", "error", "progress"]
        if with_result:
            fields.append("result")
        values = await self._redis.hmget(self._keys.audit(audit_id), fields)
        if values[0] is None:
            raise AuditNotFound(f"no audit {audit_id!r}", audit_id=audit_id)
        return {k: v for k, v in zip(fields, values, strict=True) if v is not None}

    async def png(self, audit_id: str) -> bytes:
        await self.record(audit_id, with_result=False)
        png = await self._redis.hget(self._keys.audit(audit_id), "png")
        if not png:
            raise AuditNotFound(f"audit {audit_id!r} has no plot yet", audit_id=audit_id)
        return png

    async def view(self, audit_id: str, rq_state: Any = None) -> AuditView:
        return view_of(audit_id, await self.record(audit_id), rq_state)

    async def summary(self, audit_id: str) -> AuditSummary | None:
        try:
            record = await self.record(audit_id)
        except AuditNotFound:
            return None
        view = view_of(audit_id, record)
        return AuditSummary.model_validate(view.model_dump(include=set(AuditSummary.model_fields)))


def view_of(audit_id: str, record: dict[str, bytes], rq_state: Any = None) -> AuditView:
    """The record as an ``AuditView``; ``rq_state`` (state, error) from the queue overrides a
    state the worker never got to update (a killed work-horse, a timeout)."""
    spec = AuditSpec.model_validate_json(record["spec"])
    found = _parsed(AuditInput, record.get("input"))
    result = _parsed(AuditResult, record.get("result"))
    state = _text(record.get("state", b"queued"))
    error = _text(record.get("error", b"")) or None
    if state not in TERMINAL and rq_state is not None and rq_state[0] in ("failed", "stopped"):
        state, error = "failed", rq_state[1] or error
    progress = _parsed(None, record.get("progress"))
    return AuditView(
        id=audit_id,
        model=spec.model,
        attributes=spec.attributes,
        state=state,
        created_at=datetime.fromisoformat(_text(record["created_at"])),
        rows=found.rows if found is not None else None,
        ranking=result.ranking if result is not None else None,
        error=error,
        progress=progress,
        spec=spec,
        input=found,
        result=result,
        plot_url=f"/audits/{audit_id}/plot" if result is not None else None,
    )


def _parsed(model: type[BaseModel] | None, raw: bytes | None) -> Any:
    """A stored JSON field, or None when missing or not of its schema (shown as missing)."""
    if raw is None or raw == b"":
        return None
    try:
        if model is None:
            import orjson

            return orjson.loads(raw)
        return model.model_validate_json(raw)
    except (ValidationError, ValueError):
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def enqueue_audit(queue: Queue, audit_id: str, spec: AuditSpec, training: TrainingSettings) -> str:
    """Queue the audit on the training queue; the job id is the audit id. Not retried on its
    own: a failed audit is cheap to submit again, and bad input fails the same way."""
    job = queue.enqueue(
        AUDIT_FUNCTION,
        audit_id,
        spec.model_dump(mode="json"),
        job_id=audit_id,
        job_timeout=training.job_timeout_s,
        result_ttl=training.result_ttl_s,
        failure_ttl=training.result_ttl_s,
        meta={"method": "audit", "model": spec.model, "progress": None},
    )
    return job.id
