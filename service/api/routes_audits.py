"""Operator routes for counterfactual bias audits (admin key): upload → job → result.

``POST /audits`` authenticates, reads the body within its size limit and validates the data
file, the attributes and the pairs in the upload-checking process before anything is stored
or queued, like ``POST /patches``: a bad upload is a 4xx that leaves no trace. The audit runs
in ``eraser worker`` (RQ) and writes its result (JSON and a PNG) into the audit's record.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from service.api.auth import require_admin
from service.api.bodies import documented_form, parse_form_json, read_form
from service.api.deps import GatewayDep
from service.errors import BadRequest, InvalidRequestBody
from service.jobs.audits import AuditSpec, AuditSummary, AuditView, new_audit_id

router = APIRouter(tags=["audits"], dependencies=[Depends(require_admin)])

SET_BY_GATEWAY = ("data_id", "pairs_id", "data_filename", "pairs_filename")


class AuditAccepted(BaseModel):
    audit_id: str
    rows: int
    attributes: dict[str, str]
    status_url: str


@router.post(
    "/audits",
    status_code=202,
    response_model=AuditAccepted,
    openapi_extra=documented_form(
        files={
            "data": "CSV or Parquet (the model's feature columns) or NPZ (x)",
            "pairs": "optional NPZ: x_cf or x_cf_<attribute>, row i the counterfactual of row i",
        },
        fields={"spec": "AuditSpec JSON: model, attributes, values, draws, ..."},
    ),
)
async def submit_audit(request: Request, response: Response, gw: GatewayDep) -> AuditAccepted:
    """Validate and store the inputs, queue a counterfactual bias audit, answer its id."""
    limit = gw.settings.training.max_calibration_mb
    files, fields = await read_form(
        request, files={"data": limit, "pairs": limit}, fields=("spec",), optional=("pairs",)
    )
    spec = parse_form_json(fields["spec"], AuditSpec, "spec")
    set_here = [f for f in SET_BY_GATEWAY if getattr(spec, f) is not None]
    if set_here:
        raise InvalidRequestBody(f"spec.{set_here[0]} is set by the gateway, not the uploader")
    model = gw.dataplane.model(spec.model)
    data, pairs = files["data"], files.get("pairs")
    if not data.data:
        raise BadRequest("the data file is empty")
    if pairs is not None and not pairs.data:
        raise BadRequest("the pairs file is empty")
    found = await gw.uploads.check_audit(
        data.data,
        data.filename,
        pairs.data if pairs is not None else None,
        model,
        spec,
        gw.settings.training,
    )
    stored = {
        "model": model.name,
        "data_id": await gw.audits.put_input(data.data),
        "data_filename": data.filename,
    }
    if pairs is not None:
        stored |= {"pairs_id": await gw.audits.put_input(pairs.data)}
        stored |= {"pairs_filename": pairs.filename}
    spec = spec.model_copy(update=stored)
    audit_id = new_audit_id()
    await gw.audits.create(audit_id, spec, found)
    await gw.jobs.enqueue_audit(audit_id, spec)
    url = f"/audits/{audit_id}"
    response.headers["Location"] = url
    return AuditAccepted(
        audit_id=audit_id, rows=found.rows, attributes=found.attributes, status_url=url
    )


@router.get("/audits", response_model=list[AuditSummary])
async def list_audits(
    gw: GatewayDep, limit: int = Query(default=50, ge=1, le=1000)
) -> list[AuditSummary]:
    """Audits, newest first: state and, once finished, the attributes ranked by bias."""
    summaries = [await gw.audits.summary(i) for i in await gw.audits.ids(limit)]
    return [s for s in summaries if s is not None]


@router.get("/audits/{audit_id}", response_model=AuditView)
async def get_audit(gw: GatewayDep, audit_id: str = Path(max_length=64)) -> AuditView:
    """State, progress, and the result once finished (or the reason it failed)."""
    view = await gw.audits.view(audit_id)
    if view.state in ("finished", "failed"):
        return view
    return await gw.audits.view(audit_id, await gw.jobs.state(audit_id))


@router.get(
    "/audits/{audit_id}/plot",
    responses={200: {"content": {"image/png": {}}}},
    response_class=Response,
)
async def get_audit_plot(gw: GatewayDep, audit_id: str = Path(max_length=64)) -> Response:
    """The audit's PNG: counterfactual bias per attribute (raw and served, with intervals) and
    the distribution of per-row changes."""
    return Response(await gw.audits.png(audit_id), media_type="image/png")
