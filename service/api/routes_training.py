"""Operator routes for training (admin key): upload a calibration set → job → patch version.

``POST /patches`` validates the whole upload before anything is stored or queued, so a bad file
is a 4xx that leaves no trace; the job itself runs in ``eraser worker`` processes (RQ).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from patch_training.calibration import CalibrationStore
from patch_training.jobs.queue import JobView, enqueue_distill, job_view, training_queue
from patch_training.jobs.spec import DistillJobSpec
from patch_training.jobs.submit import check_upload
from service.api.auth import require_admin
from service.api.bodies import parse_form_json, read_upload
from service.dataplane import Dataplane
from service.errors import BadRequest, InvalidRequestBody

router = APIRouter(tags=["training"], dependencies=[Depends(require_admin)])


class JobAccepted(BaseModel):
    job_id: str
    calibration_set_id: str = Field(description="sha256 of the stored calibration file")
    rows: int
    status_url: str


@router.post("/patches", status_code=202, response_model=JobAccepted)
async def submit_training(
    request: Request,
    response: Response,
    calibration: Annotated[UploadFile, File(description="CSV, Parquet, NPZ, or zip of images")],
    spec: Annotated[str, Form(description="DistillJobSpec JSON: model, target, bias, ...")],
) -> JobAccepted:
    """Validate and store the calibration set, queue a distillation job, answer its id."""
    job = _parse_spec(spec)
    plane: Dataplane = request.app.state.dataplane
    model = plane.model(job.model)
    training = plane.settings.training
    data = await read_upload(calibration, training.max_calibration_mb, "calibration file")
    if not data:
        raise BadRequest("calibration file is empty")
    _, meta = await run_in_threadpool(
        check_upload, data, calibration.filename, model, job, training
    )
    store: CalibrationStore = request.app.state.calibrations
    await store.put(data, meta)
    job = job.model_copy(update={"calibration_set_id": meta.sha256, "model": model.name})
    queue = training_queue(request.app.state.sync_redis, training)
    job_id = await run_in_threadpool(enqueue_distill, queue, job, training)
    response.headers["Location"] = f"/jobs/{job_id}"
    return JobAccepted(
        job_id=job_id, calibration_set_id=meta.sha256, rows=meta.rows, status_url=f"/jobs/{job_id}"
    )


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, request: Request) -> JobView:
    """State, progress, and the registered versions or the reason it failed."""
    return await run_in_threadpool(job_view, request.app.state.sync_redis, job_id)


def _parse_spec(raw: str) -> DistillJobSpec:
    spec = parse_form_json(raw, DistillJobSpec, "spec")
    if spec.calibration_set_id is not None:
        raise InvalidRequestBody("spec.calibration_set_id is set by the gateway, not the uploader")
    return spec
