"""Operator routes for training (admin key): upload a calibration set → job → patch version.

``POST /patches`` validates the whole upload (in the upload-checking process, never on the
event loop or the patch-inference threads) before anything is stored or queued, so a bad file
is a 4xx that leaves no trace; the job itself runs in ``eraser worker`` processes (RQ).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from service.api.auth import require_admin
from service.api.bodies import documented_form, parse_form_json, read_form
from service.api.deps import GatewayDep
from service.errors import BadRequest, InvalidRequestBody
from service.jobs.queue import JobView
from service.jobs.spec import TrainingJobSpec

router = APIRouter(tags=["training"], dependencies=[Depends(require_admin)])


class JobAccepted(BaseModel):
    job_id: str
    calibration_set_id: str = Field(description="sha256 of the stored calibration file")
    rows: int
    status_url: str


@router.post(
    "/patches",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=documented_form(
        files={"calibration": "CSV, Parquet, NPZ, or zip of images"},
        fields={"spec": "TrainingJobSpec JSON: model, target, bias, method, ..."},
    ),
)
async def submit_training(request: Request, response: Response, gw: GatewayDep) -> JobAccepted:
    """Validate and store the calibration set, queue a training job, answer its id."""
    training = gw.settings.training
    limits = {"calibration": training.max_calibration_mb}
    files, fields = await read_form(request, files=limits, fields=("spec",))
    spec = _parse_spec(fields["spec"])
    model = gw.dataplane.model(spec.model)
    upload = files["calibration"]
    if not upload.data:
        raise BadRequest("calibration file is empty")
    data = upload.data
    meta = await gw.uploads.check(data, upload.filename, model, spec, training)
    await gw.calibrations.put(data, meta)
    spec = spec.model_copy(update={"calibration_set_id": meta.sha256, "model": model.name})
    job_id = await gw.jobs.enqueue(spec)
    response.headers["Location"] = f"/jobs/{job_id}"
    return JobAccepted(
        job_id=job_id, calibration_set_id=meta.sha256, rows=meta.rows, status_url=f"/jobs/{job_id}"
    )


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, gw: GatewayDep) -> JobView:
    """State, progress, and the registered versions or the reason it failed."""
    return await gw.jobs.view(job_id)


def _parse_spec(raw: str) -> TrainingJobSpec:
    spec = parse_form_json(raw, TrainingJobSpec, "spec")
    if spec.calibration_set_id is not None:
        raise InvalidRequestBody("spec.calibration_set_id is set by the gateway, not the uploader")
    return spec
