"""The training job queue: RQ on the gateway's Redis.

Why RQ: it is the long-established Redis job queue for Python, with what training jobs need out
of the box — per-job timeouts, retries, a failed-job registry with the traceback, job metadata for
progress, abandoned-job detection when a worker dies — and it needs nothing but Redis, which the
registry already requires. (Celery needs a broker abstraction and more moving parts; arq is
asyncio-first and would run PyTorch training on an event loop.) This module imports no PyTorch,
so the gateway can enqueue and inspect jobs: a job names its function by its dotted path
(``JOB_FUNCTION``), which only the worker imports.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime
from typing import Any

import redis
from pydantic import BaseModel, Field, ValidationError
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from service.errors import JobNotFound
from service.jobs.audits import AuditSpec, enqueue_audit
from service.jobs.spec import JobResult, TrainingJobSpec
from service.settings import GatewaySettings, TrainingSettings

JOB_FUNCTION = "patch_training.jobs.entry.run_job"  # imported by `eraser worker` only


class JobQueue:
    """The gateway's handle on the queue: RQ is synchronous, so every call runs in a worker
    thread (the event loop's default pool, not the patch-inference pool)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._training = settings.training
        self._redis = sync_redis(settings)
        self._queue = training_queue(self._redis, settings.training)

    async def enqueue(self, spec: TrainingJobSpec) -> str:
        return await asyncio.to_thread(enqueue_job, self._queue, spec, self._training)

    async def view(self, job_id: str) -> JobView:
        return await asyncio.to_thread(job_view, self._redis, job_id)

    async def enqueue_audit(self, audit_id: str, spec: AuditSpec) -> str:
        return await asyncio.to_thread(enqueue_audit, self._queue, audit_id, spec, self._training)

    async def state(self, job_id: str) -> tuple[str, str | None] | None:
        """(state, error) of a queued job as RQ has it; None when RQ no longer knows it."""
        try:
            view = await asyncio.to_thread(job_view, self._redis, job_id)
        except JobNotFound:
            return None
        return view.state, view.error

    def close(self) -> None:
        self._redis.close()


def sync_redis(settings: GatewaySettings) -> redis.Redis:
    """RQ speaks synchronous redis-py; same URL and timeouts as everything else."""
    return redis.Redis.from_url(
        settings.redis.url,
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.connect_timeout_s,
    )


def training_queue(connection: redis.Redis, training: TrainingSettings) -> Queue:
    """JSON, not pickle: job arguments and results are plain data that the gateway reads."""
    return Queue(training.queue, connection=connection, serializer=JSONSerializer)


def enqueue_job(queue: Queue, spec: TrainingJobSpec, training: TrainingSettings) -> str:
    """Queue a training job (its calibration set must already be stored); its id."""
    if spec.calibration_set_id is None:
        raise ValueError("a queued job needs a stored calibration set")
    job = queue.enqueue(
        JOB_FUNCTION,
        spec.model_dump(mode="json"),
        job_id=f"{spec.method}-{uuid.uuid4().hex[:16]}",
        job_timeout=training.job_timeout_s,
        result_ttl=training.result_ttl_s,
        failure_ttl=training.result_ttl_s,
        retry=Retry(max=training.retries, interval=training.retry_interval_s)
        if training.retries
        else None,
        meta={"method": spec.method, "model": spec.model, "progress": None},
    )
    return job.id


class JobView(BaseModel):
    """What ``GET /jobs/{id}`` answers."""

    id: str
    method: str | None
    state: str = Field(description="queued, started, finished, failed, scheduled (retry), ...")
    progress: dict[str, Any] | None = Field(description="stage, done, total, fraction")
    result: JobResult | None = Field(description="once finished")
    error: str | None = Field(description="why it failed (last attempt)")
    retries_left: int | None
    enqueued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"  # what RQ accepts as a job id, bounded


def job_view(connection: redis.Redis, job_id: str) -> JobView:
    if not re.fullmatch(JOB_ID_PATTERN, job_id):  # RQ raises ValueError on other characters
        raise JobNotFound(f"no job {job_id[:80]!r}: not a job id", job_id=job_id[:80])
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        raise JobNotFound(f"no job {job_id!r} (unknown, or expired)", job_id=job_id) from None
    meta = job.get_meta(refresh=False)
    status = job.get_status(refresh=False)
    return JobView(
        id=job.id,
        method=meta.get("method"),
        state=status.value if status is not None else "unknown",
        progress=meta.get("progress"),
        result=_result(job),
        error=_error(job, meta, status),
        retries_left=job.retries_left,
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
    )


def _result(job: Job) -> JobResult | None:
    """The stored result, read as untrusted input: a record that is not a JobResult is shown
    as missing rather than passed on."""
    value = job.return_value(refresh=False)
    try:
        return None if value is None else JobResult.model_validate(value)
    except ValidationError:
        return None


def _error(job: Job, meta: dict[str, Any], status: JobStatus | None) -> str | None:
    """The job's own one-line reason when it wrote one, else the last line RQ recorded (a
    killed work-horse or a timeout never reaches the job's own handler)."""
    if status not in (JobStatus.FAILED, JobStatus.SCHEDULED, JobStatus.STOPPED):
        return meta.get("error")
    if meta.get("error"):
        return meta["error"]
    latest = job.latest_result()
    text = latest.exc_string if latest is not None else None
    return text.strip().splitlines()[-1] if text else None
