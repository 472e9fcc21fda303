"""Operator routes (admin key): register patch versions, inspect them, change the active stack."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from service.api.auth import require_admin
from service.api.bodies import (
    documented_body,
    documented_form,
    parse_body,
    parse_form_json,
    read_form,
)
from service.api.deps import DataplaneDep, Gateway, GatewayDep, RegistryDep
from service.api.schemas import (
    PatchSummary,
    PatchVersionView,
    RollbackRequest,
    StackUpdate,
    StackView,
)
from service.errors import BadRequest, InvalidStoredRecord, PatchNotFound
from service.registry.models import (
    APPROVED,
    NAME_PATTERN,
    PatchManifest,
    PatchSpec,
    Stack,
    VersionStatus,
    utcnow,
)
from service.registry.signing import sha256_hex
from service.registry.store import HISTORY_LENGTH
from service.runtime.stack import build_session, check_compatible

router = APIRouter(tags=["operators"], dependencies=[Depends(require_admin)])

OPERATOR_UPLOAD = VersionStatus(
    status=APPROVED, reason="uploaded through the admin API; not judged by the validation gate"
)

PatchName = Annotated[str, Path(pattern=NAME_PATTERN, description="letters, digits, _ . -")]


@router.post(
    "/patches/{name}/versions",
    status_code=201,
    response_model=PatchManifest,
    openapi_extra=documented_form(
        files={"artifact": "the ONNX patch"},
        fields={"manifest": "PatchSpec JSON: kind, model, classes, input_shape, ..."},
    ),
)
async def register_version(name: PatchName, request: Request, gw: GatewayDep) -> PatchManifest:
    """Validate a ready ONNX patch against its model (loads and runs it), then register it as
    *approved*: the operator vouches for it with the admin key; no validation gate judged it."""
    limits = {"artifact": gw.settings.max_artifact_mb}
    files, fields = await read_form(request, files=limits, fields=("manifest",))
    spec = parse_form_json(fields["manifest"], PatchSpec, "manifest")
    blob = files["artifact"].data
    await _validate_artifact(gw, name, spec, blob)
    return await gw.registry.register_version(name, spec, blob, status=OPERATOR_UPLOAD)


async def _validate_artifact(gw: Gateway, name: str, spec: PatchSpec, blob: bytes) -> None:
    """The same checks a replica makes at hot-load, so a bad artifact is refused at the door.
    The session is built on the loader thread, never on the patch-inference pool."""
    model = gw.dataplane.model(spec.model)
    if not blob:
        raise BadRequest("artifact is empty")
    probe = PatchManifest(
        **spec.model_dump(),
        name=name,
        version=1,
        sha256=sha256_hex(blob),
        size_bytes=len(blob),
        created_at=utcnow(),
    )
    check_compatible(probe, model)
    await gw.load_blocking(build_session, probe, blob, model, gw.settings.runtime)


@router.get("/patches", response_model=list[PatchSummary])
async def list_patches(registry: RegistryDep) -> list[PatchSummary]:
    summaries = []
    for name in await registry.list_patches():
        latest = await registry.latest_version(name)
        summaries.append(
            PatchSummary(
                name=name, latest_version=latest.version, kind=latest.kind, model=latest.model
            )
        )
    return summaries


@router.get("/patches/{name}/versions", response_model=list[PatchManifest])
async def list_versions(name: PatchName, registry: RegistryDep) -> list[PatchManifest]:
    return await registry.list_versions(name)


@router.get("/patches/{name}/versions/{version}", response_model=PatchVersionView)
async def get_version(name: PatchName, version: int, registry: RegistryDep) -> PatchVersionView:
    manifest = await registry.get_manifest(name, version)
    return PatchVersionView(manifest=manifest, status=await registry.get_status(name, version))


@router.get(
    "/patches/{name}/versions/{version}/report",
    responses={200: {"content": {"application/json": {}, "image/png": {}}}},
)
async def get_report(
    name: PatchName, version: int, request: Request, registry: RegistryDep, format: str = "json"
) -> Response:
    """The training report: held-out metrics (JSON) or its plot (``?format=png`` or
    ``Accept: image/png``)."""
    if format not in ("json", "png"):
        raise BadRequest(f"format must be json or png, not {format!r}")
    report = await registry.get_report(name, version)
    if format == "png" or "image/png" in request.headers.get("accept", ""):
        if report.png is None:
            raise PatchNotFound(f"patch {name!r} version {version} has no report plot")
        return Response(report.png, media_type="image/png")
    return Response(report.json_bytes, media_type="application/json")


@router.get("/models/{model}/stack", response_model=StackView)
async def get_stack(model: str, gw: GatewayDep) -> StackView:
    """The registry's active stack, and what this replica serves; a stored stack that fails
    its schema or signature is a 409 that also says what this replica serves meanwhile."""
    name = gw.dataplane.model(model).name
    try:
        stack = await gw.registry.get_stack(name)
    except InvalidStoredRecord as exc:
        await gw.watcher.refresh(name)
        raise InvalidStoredRecord(
            exc.message,
            model=name,
            served_revision=gw.watcher.served_revision(name),
            load_error=gw.watcher.load_error(name),
        ) from None
    return await _stack_view(gw, stack)


@router.get("/models/{model}/stack/history", response_model=list[Stack])
async def stack_history(
    model: str,
    plane: DataplaneDep,
    registry: RegistryDep,
    limit: Annotated[int, Query(ge=0, le=HISTORY_LENGTH, description="newest first")] = 20,
) -> list[Stack]:
    return await registry.history(plane.model(model).name, limit)


@router.put(
    "/models/{model}/stack", response_model=StackView, openapi_extra=documented_body(StackUpdate)
)
async def set_stack(model: str, request: Request, gw: GatewayDep) -> StackView:
    """Compare-and-set the active stack; 409 if ``expected_revision`` is stale."""
    body = await parse_body(request, StackUpdate)
    cfg = gw.dataplane.model(model)
    for entry in body.entries:  # refuse a stack that no replica could load (α: the registry)
        check_compatible(await gw.registry.get_manifest(entry.patch, entry.version), cfg)
    stack = await gw.registry.set_stack(
        cfg.name, body.entries, body.expected_revision, body.reason, body.revision_floor
    )
    return await _stack_view(gw, stack)


@router.post(
    "/models/{model}/stack/rollback",
    response_model=StackView,
    openapi_extra=documented_body(RollbackRequest, required=False),
)
async def rollback(model: str, request: Request, gw: GatewayDep) -> StackView:
    """Re-activate the previous stack as a new revision (the body is optional)."""
    body = await parse_body(request, RollbackRequest) if await request.body() else None
    expected = body.expected_revision if body else None
    stack = await gw.registry.rollback(gw.dataplane.model(model).name, expected)
    return await _stack_view(gw, stack)


async def _stack_view(gw: Gateway, stack: Stack) -> StackView:
    """Wait briefly for this replica to load the new revision so the answer can say so."""
    await gw.watcher.refresh(stack.model)
    return StackView(
        stack=stack,
        served_revision=gw.watcher.served_revision(stack.model),
        load_error=gw.watcher.load_error(stack.model),
    )
