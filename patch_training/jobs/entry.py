"""Where a training job starts: in an RQ worker (``run_job``) or in the CLI (``run_stored``).

Both read the calibration set (and an FMD job's pairs) back from the store by its sha256 and
re-validate it with this process's model table, so a worker configured differently from the
gateway fails loudly instead of training on misread data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rq import get_current_job
from rq.job import Job

from patch_training.jobs.context import open_context
from patch_training.jobs.pipeline import run_training
from patch_training.jobs.progress import JobProgress, Snapshot
from service.calibration.loader import load_calibration
from service.errors import EraserError
from service.jobs.spec import JobResult, TrainingJobSpec
from service.settings import GatewaySettings

log = logging.getLogger(__name__)


def is_permanent(exc: BaseException) -> bool:
    """Bad input or a broken export fails the same way every time: retrying only wastes the
    queue. Upstream outages, Redis hiccups and killed workers are worth another attempt."""
    if isinstance(exc, EraserError):
        return exc.status_code < 500
    return isinstance(exc, ValueError)  # ParityError (a failed ONNX export check) is one


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """The RQ job function (``service.jobs.queue.JOB_FUNCTION``): progress goes to the job's
    meta, the result is plain JSON."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_job runs inside an RQ worker; use run_stored otherwise")
    progress = JobProgress(publish=_meta_writer(job))
    job.meta.pop("error", None)  # an earlier attempt's reason no longer applies
    try:
        result = asyncio.run(
            run_stored(TrainingJobSpec.model_validate(spec), GatewaySettings(), progress, job.id)
        )
    except Exception as exc:
        _record_failure(job, exc)
        raise
    return result.model_dump(mode="json")


async def run_stored(
    spec: TrainingJobSpec,
    settings: GatewaySettings,
    progress: JobProgress,
    job_id: str | None = None,
) -> JobResult:
    """Load the stored calibration set named by the spec and run the job."""
    if spec.calibration_set_id is None:
        raise ValueError("the job spec names no calibration set")
    async with open_context(settings, progress, job_id) as ctx:
        data, meta = await ctx.calibrations.get(spec.calibration_set_id)
        pairs = None if spec.pairs_id is None else await ctx.calibrations.get_pairs(spec.pairs_id)
        calib = load_calibration(
            data,
            ctx.model(spec.model),
            spec.target,
            spec.bias,
            settings.training.max_calibration_rows,
            filename=meta.filename,
            bias_required=not spec.label_free,
            bias_is_input=spec.bias_is_input,
            pairs=pairs,
        )
        return await run_training(spec, calib, ctx)


def _meta_writer(job: Job) -> Any:
    def publish(snapshot: Snapshot) -> None:
        job.meta["progress"] = snapshot
        job.save_meta()

    return publish


def _record_failure(job: Job, exc: Exception) -> None:
    """A one-line reason for ``GET /jobs/{id}``; no retry when the input is at fault."""
    job.meta["error"] = f"{type(exc).__name__}: {exc}"
    job.save_meta()
    if is_permanent(exc):
        job.retries_left = 0  # RQ reads this attribute of the running job to decide on a retry
    log.error("job %s failed: %s", job.id, job.meta["error"])
