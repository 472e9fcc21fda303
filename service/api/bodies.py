"""Request bodies, read by the routes themselves — after authentication, within the edge's size
limit (``service.api.edge``) — and parsed at the edge by pydantic.

FastAPI reads and parses a declared body parameter *before* it runs a route's dependencies, so
a route that declared one would parse an unauthenticated 100 MB body before answering 401.
Routes here therefore take the raw ``Request`` and call these helpers; the schemas still reach
the OpenAPI document through ``openapi_extra`` (``documented_body``, ``documented_form``).

JSON bodies go through ``model_validate_json``: parsing and validation in one pass in Rust,
which matters inside a ~1 ms budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from service.errors import BadRequest, InvalidRequestBody, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)

FORM_FIELD_LIMIT = 1024**2  # a JSON spec or manifest next to an uploaded file


async def parse_body(request: Request, model: type[M]) -> M:
    """The body as ``model``; invalid JSON or fields are the usual 422 with their locations."""
    return parse_json(await request.body(), model)


def parse_json(raw: bytes, model: type[M]) -> M:
    """``raw`` JSON as ``model``, with ``parse_body``'s errors (for a body read in parts)."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


@dataclass(frozen=True)
class UploadedFile:
    filename: str | None
    data: bytes


async def read_form(
    request: Request,
    files: dict[str, float],
    fields: tuple[str, ...],
    optional: tuple[str, ...] = (),
) -> tuple[dict[str, UploadedFile], dict[str, str]]:
    """A multipart form with exactly the named parts (400 naming one that is missing), as
    (files, fields). ``files`` maps each file part to its limit in MB (``read_upload``); text
    parts are capped at ``FORM_FIELD_LIMIT``, the whole body at the edge's limit for the route.
    File parts named in ``optional`` may be absent (then absent from the answer). The form's
    temporary files are closed before this returns."""
    limits = {"max_files": len(files), "max_fields": len(fields)}
    async with request.form(**limits, max_part_size=FORM_FIELD_LIMIT) as form:
        texts = {}
        for name in fields:
            part = form.get(name)
            if not isinstance(part, str):
                raise BadRequest(f"the form needs a text part named {name!r}")
            texts[name] = part
        uploads = {}
        for name, limit_mb in files.items():
            part = form.get(name)
            if part is None and name in optional:
                continue
            if not isinstance(part, UploadFile):
                raise BadRequest(f"the form needs a file part named {name!r}")
            data = await read_upload(part, limit_mb, name)
            uploads[name] = UploadedFile(part.filename, data)
    return uploads, texts


def parse_form_json(raw: str, model: type[M], field: str) -> M:
    """A JSON document sent as a multipart form field (next to an uploaded file): not JSON is a
    400, a bad field a 422 that names it as ``field.path``."""
    try:
        return model.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{field} is not JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestBody(f"{field}.{where}: {first['msg']}") from None


async def read_upload(upload: UploadFile, limit_mb: float, what: str) -> bytes:
    """An uploaded file's bytes: refused (413) before reading when its size is known to exceed
    the limit, and never read past the limit when it is not."""
    limit = int(limit_mb * 2**20)
    if upload.size is not None and upload.size > limit:
        raise PayloadTooLarge(f"{what} is {upload.size} bytes; the limit is {limit_mb} MB")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"{what} exceeds the limit of {limit_mb} MB")
    return data


def documented_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` itself (definitions inlined)."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": _inlined_schema(model)}},
        }
    }


def documented_form(files: dict[str, str], fields: dict[str, str]) -> dict[str, Any]:
    """``openapi_extra`` for a multipart route: file and text parts, each with a description."""
    properties: dict[str, Any] = {
        name: {"type": "string", "format": "binary", "description": text}
        for name, text in files.items()
    }
    properties |= {name: {"type": "string", "description": text} for name, text in fields.items()}
    schema = {"type": "object", "properties": properties, "required": [*files, *fields]}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def _inlined_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return _inline(schema, definitions)


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {k: _inline(v, definitions) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, definitions) for v in node]
    return node
