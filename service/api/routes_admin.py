"""Operator routes (admin key): register patch versions, inspect them, change the active stack."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile

from service.api.auth import require_admin
from service.api.bodies import parse_form_json, read_upload
from service.api.schemas import (
    PatchSummary,
    PatchVersionView,
    RollbackRequest,
    StackUpdate,
    StackView,
)
from service.dataplane import Dataplane
from service.errors import BadRequest, PatchNotFound
from service.registry.models import PatchManifest, PatchSpec, Stack, StackEntry, utcnow
from service.registry.signing import sha256_hex
from service.registry.store import Registry
from service.runtime.stack import build_session, check_compatible

router = APIRouter(tags=["operators"], dependencies=[Depends(require_admin)])


def _registry(request: Request) -> Registry:
    return request.app.state.registry


def _plane(request: Request) -> Dataplane:
    return request.app.state.dataplane


@router.post("/patches/{name}/versions", status_code=201, response_model=PatchManifest)
async def register_version(
    name: str,
    request: Request,
    manifest: Annotated[str, Form(description="PatchSpec JSON: kind, model, classes, input_shape")],
    artifact: Annotated[UploadFile, File(description="the ONNX patch")],
) -> PatchManifest:
    """Validate a ready ONNX patch against its model (loads and runs it), then register it."""
    spec = parse_form_json(manifest, PatchSpec, "manifest")
    blob = await read_upload(artifact, _plane(request).settings.max_artifact_mb, "artifact")
    await _validate_artifact(request, name, spec, blob)
    return await _registry(request).register_version(name, spec, blob)


async def _validate_artifact(request: Request, name: str, spec: PatchSpec, blob: bytes) -> None:
    """The same checks a replica makes at hot-load, so a bad artifact is refused at the door."""
    plane = _plane(request)
    model = plane.model(spec.model)
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
    await plane.run_blocking(build_session, probe, blob, model, plane.settings.runtime)


@router.get("/patches", response_model=list[PatchSummary])
async def list_patches(request: Request) -> list[PatchSummary]:
    registry = _registry(request)
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
async def list_versions(name: str, request: Request) -> list[PatchManifest]:
    return await _registry(request).list_versions(name)


@router.get("/patches/{name}/versions/{version}", response_model=PatchVersionView)
async def get_version(name: str, version: int, request: Request) -> PatchVersionView:
    registry = _registry(request)
    manifest = await registry.get_manifest(name, version)
    return PatchVersionView(manifest=manifest, status=await registry.get_status(name, version))


@router.get(
    "/patches/{name}/versions/{version}/report",
    responses={200: {"content": {"application/json": {}, "image/png": {}}}},
)
async def get_report(name: str, version: int, request: Request, format: str = "json") -> Response:
    """The training report: held-out metrics (JSON) or its plot (``?format=png`` or
    ``Accept: image/png``)."""
    report = await _registry(request).get_report(name, version)
    wants_png = format == "png" or "image/png" in request.headers.get("accept", "")
    if format not in ("json", "png"):
        raise BadRequest(f"format must be json or png, not {format!r}")
    if wants_png:
        if report.png is None:
            raise PatchNotFound(f"patch {name!r} version {version} has no report plot")
        return Response(report.png, media_type="image/png")
    return Response(report.json_bytes, media_type="application/json")


@router.get("/models/{model}/stack", response_model=StackView)
async def get_stack(model: str, request: Request) -> StackView:
    return await _stack_view(
        request, await _registry(request).get_stack(_model_name(request, model))
    )


@router.get("/models/{model}/stack/history", response_model=list[Stack])
async def stack_history(model: str, request: Request, limit: int = 20) -> list[Stack]:
    return await _registry(request).history(_model_name(request, model), limit)


@router.put("/models/{model}/stack", response_model=StackView)
async def set_stack(model: str, body: StackUpdate, request: Request) -> StackView:
    """Compare-and-set the active stack; 409 if ``expected_revision`` is stale."""
    name = _model_name(request, model)
    await _check_entries(request, name, body.entries)
    stack = await _registry(request).set_stack(
        name, body.entries, body.expected_revision, body.reason
    )
    return await _stack_view(request, stack)


@router.post("/models/{model}/stack/rollback", response_model=StackView)
async def rollback(model: str, request: Request, body: RollbackRequest | None = None) -> StackView:
    """Re-activate the previous stack as a new revision."""
    expected = body.expected_revision if body else None
    stack = await _registry(request).rollback(_model_name(request, model), expected)
    return await _stack_view(request, stack)


def _model_name(request: Request, model: str) -> str:
    return _plane(request).model(model).name


async def _check_entries(request: Request, model: str, entries: list[StackEntry]) -> None:
    """Refuse a stack that no replica could load, before any replica tries."""
    cfg = _plane(request).model(model)
    for entry in entries:
        check_compatible(await _registry(request).get_manifest(entry.patch, entry.version), cfg)


async def _stack_view(request: Request, stack: Stack) -> StackView:
    """Wait briefly for this replica to load the new revision so the answer can say so."""
    watcher = _plane(request).watcher
    await watcher.refresh(stack.model)
    return StackView(
        stack=stack,
        served_revision=watcher.served_revision(stack.model),
        load_error=watcher.load_error(stack.model),
    )
