"""Operator routes for training (admin key): upload a calibration set → job → patch version.

``POST /patches`` validates the whole upload (in the upload-checking process, never on the
event loop or the patch-inference threads) before anything is stored or queued, so a bad file
is a 4xx that leaves no trace (an FMD job's optional ``pairs`` file is checked with it); the
job itself runs in ``eraser worker`` processes (RQ).
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
    pairs_id: str | None = Field(
        default=None, description="sha256 of the stored counterfactual pairs (method 'fmd')"
    )
    rows: int
    status_url: str


@router.post(
    "/patches",
    status_code=202,
    response_model=JobAccepted,
    openapi_extra=documented_form(
        files={
            "calibration": "CSV, Parquet, NPZ, or zip of images",
            "pairs": "method 'fmd' only, optional: NPZ with x_cf or x_cf_<bias column>, row i "
            "the counterfactual of calibration row i (attributes that are not inputs)",
        },
        fields={"spec": "TrainingJobSpec JSON: model, target, bias, method, ..."},
    ),
)
async def submit_training(request: Request, response: Response, gw: GatewayDep) -> JobAccepted:
    """Validate and store the calibration set, queue a training job, answer its id."""
    training = gw.settings.training
    limits = {"calibration": training.max_calibration_mb, "pairs": training.max_calibration_mb}
    files, fields = await read_form(request, files=limits, fields=("spec",), optional=("pairs",))
    spec = _parse_spec(fields["spec"])
    model = gw.dataplane.model(spec.model)
    upload, pairs_upload = files["calibration"], files.get("pairs")
    if not upload.data:
        raise BadRequest("calibration file is empty")
    if pairs_upload is not None and not pairs_upload.data:
        raise BadRequest("the pairs file is empty")
    data, pairs = upload.data, pairs_upload.data if pairs_upload is not None else None
    meta = await gw.uploads.check(data, upload.filename, model, spec, training, pairs)
    await gw.calibrations.put(data, meta)
    stored = {"calibration_set_id": meta.sha256, "model": model.name}
    if pairs is not None:
        stored["pairs_id"] = await gw.calibrations.put_pairs(pairs)
    spec = spec.model_copy(update=stored)
    job_id = await gw.jobs.enqueue(spec)
    response.headers["Location"] = f"/jobs/{job_id}"
    return JobAccepted(
        job_id=job_id,
        calibration_set_id=meta.sha256,
        pairs_id=spec.pairs_id,
        rows=meta.rows,
        status_url=f"/jobs/{job_id}",
    )


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, gw: GatewayDep) -> JobView:
    """State, progress, and the registered versions or the reason it failed."""
    return await gw.jobs.view(job_id)


def _parse_spec(raw: str) -> TrainingJobSpec:
    spec = parse_form_json(raw, TrainingJobSpec, "spec")
    for field in ("calibration_set_id", "pairs_id"):
        if getattr(spec, field) is not None:
            raise InvalidRequestBody(f"spec.{field} is set by the gateway, not the uploader")
    return spec
