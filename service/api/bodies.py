"""JSON request bodies on the hot routes: parsed and validated in one pass by pydantic-core.

FastAPI's own body handling decodes JSON with the standard library and then validates the Python
objects; ``model_validate_json`` does both in Rust, which matters inside a ~1 ms budget. The body
schema still reaches the OpenAPI document through ``openapi_extra``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi import Request, UploadFile
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from service.errors import BadRequest, InvalidRequestBody, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    """The body as ``model``; invalid JSON or fields are the usual 422 with their locations."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


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


def documented_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads ``model`` itself (definitions inlined)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, definitions)}},
        }
    }


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inline(definitions[ref.removeprefix("#/$defs/")], definitions)
        return {k: _inline(v, definitions) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, definitions) for v in node]
    return node
