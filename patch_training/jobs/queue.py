"""The training job queue: RQ on the gateway's Redis.

Why RQ: it is the long-established Redis job queue for Python, with what the issue asks for out of
the box — per-job timeouts, retries, a failed-job registry with the traceback, job metadata for
progress, abandoned-job detection when a worker dies — and it needs nothing but Redis, which the
registry already requires. (Celery needs a broker abstraction and more moving parts; arq is
asyncio-first and would run PyTorch training on an event loop.) This module imports no PyTorch,
so the gateway can enqueue and inspect jobs.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import redis
from pydantic import BaseModel, Field
from rq import Queue, Retry
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from patch_training.jobs.spec import DistillJobSpec
from service.errors import JobNotFound
from service.settings import GatewaySettings, TrainingSettings

DISTILL = "patch_training.jobs.entry.distill_job"


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


def enqueue_distill(queue: Queue, spec: DistillJobSpec, training: TrainingSettings) -> str:
    """Queue a distillation job (its calibration set must already be stored); its id."""
    if spec.calibration_set_id is None:
        raise ValueError("a queued job needs a stored calibration set")
    job = queue.enqueue(
        DISTILL,
        spec.model_dump(mode="json"),
        job_id=f"distill-{uuid.uuid4().hex[:16]}",
        job_timeout=training.job_timeout_s,
        result_ttl=training.result_ttl_s,
        failure_ttl=training.result_ttl_s,
        retry=Retry(max=training.retries, interval=training.retry_interval_s)
        if training.retries
        else None,
        meta={"kind": spec.kind, "model": spec.model, "progress": None},
    )
    return job.id


class JobView(BaseModel):
    """What ``GET /jobs/{id}`` answers."""

    id: str
    kind: str | None
    state: str = Field(description="queued, started, finished, failed, scheduled (retry), ...")
    progress: dict[str, Any] | None = Field(description="stage, done, total, fraction")
    result: dict[str, Any] | None = Field(description="DistillResult once finished")
    error: str | None = Field(description="why it failed (last attempt)")
    retries_left: int | None
    enqueued_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None


def job_view(connection: redis.Redis, job_id: str) -> JobView:
    try:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        raise JobNotFound(f"no job {job_id!r} (unknown, or expired)", job_id=job_id) from None
    meta = job.get_meta(refresh=False)
    status = job.get_status(refresh=False)
    return JobView(
        id=job.id,
        kind=meta.get("kind"),
        state=status.value if status is not None else "unknown",
        progress=meta.get("progress"),
        result=job.return_value(refresh=False),
        error=_error(job, meta, status),
        retries_left=job.retries_left,
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
    )


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
