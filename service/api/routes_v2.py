"""Drop-in Open Inference Protocol v2: existing clients change only the URL.

The input tensor goes through the same data plane as ``/predict``; the configured output tensor
comes back debiased in the upstream's own output kind (logits stay logits, probabilities stay
probabilities) and in the model's declared ``upstream.output_datatype`` (unset: the
upstream's own float type), with the stack revision in ``parameters`` and the
``X-Eraser-Revision`` header. Every model route also answers under ``/versions/{version}``
(any version: one per model). Inputs and outputs may use the
binary tensor data extension (``service.oip``); errors are the protocol's
``{"error": "<message>"}`` (``service.api.errors``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import TypeAdapter, ValidationError

from service import __version__, oip
from service.api.auth import require_predict
from service.api.bodies import documented_body, parse_json
from service.api.deps import DataplaneDep
from service.api.responses import REVISION_HEADER
from service.api.schemas import V2InferRequest, V2InferResponse, V2RequestParameters
from service.dataplane import Prediction
from service.eraser_math import from_log_probs
from service.errors import InvalidInstances, InvalidMonitoring, InvalidTensor
from service.instances import check_batch_size, check_finite
from service.settings import ModelConfig

health = APIRouter(tags=["v2 health"])
router = APIRouter(tags=["v2"], dependencies=[Depends(require_predict)])

F = TypeVar("F", bound=Callable[..., Any])
MONITOR_ROWS = TypeAdapter(list[dict[str, str]])
NO_PARAMETERS = V2RequestParameters()


@health.get("/v2/health/live")
async def live() -> dict:
    return {"live": True}


@health.get("/v2/health/ready")
async def ready(plane: DataplaneDep, response: Response) -> dict:
    """Ready once every model's active stack is loaded. ``problems`` names each model whose
    registry state is not what it serves (a failed hot-load, a registry behind after a Redis
    data loss): a replica that keeps serving its last verified stack stays ready, but says so."""
    is_ready = all(plane.ready(m.name) for m in plane.settings.models)
    response.status_code = 200 if is_ready else 503
    problems = {
        m.name: {"served_revision": plane.watcher.served_revision(m.name), "error": error}
        for m in plane.settings.models
        if (error := plane.watcher.load_error(m.name)) is not None
    }
    return {"ready": is_ready, "problems": problems} if problems else {"ready": is_ready}


@router.get("/v2")
async def server_metadata() -> dict:
    """OIP server metadata: the extensions clients may use."""
    return {"name": "eraser-gateway", "version": __version__, "extensions": ["binary_tensor_data"]}


VERSIONED = "/versions/{version}"
VERSION_PARAMETER: Final = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "any version: the gateway serves one per model (its active stack), and "
    "model_version in the answer names the stack revision served",
}


def model_route(method: str, tail: str = "", **kwargs: Any) -> Callable[[F], F]:
    """Register a handler at ``/v2/models/{model}<tail>`` and at its versioned twin
    ``/v2/models/{model}/versions/{version}<tail>`` (what tritonclient calls when given a
    ``model_version``): the same handler, key, limits, errors and metrics; the version is not
    read (one version per model)."""

    def register(handler: F) -> F:
        path = "/v2/models/{model}"
        router.add_api_route(path + tail, handler, methods=[method], **kwargs)
        extra = dict(kwargs.get("openapi_extra") or {})
        extra["parameters"] = [*extra.get("parameters", []), VERSION_PARAMETER]
        versioned = {**kwargs, "openapi_extra": extra}
        router.add_api_route(path + VERSIONED + tail, handler, methods=[method], **versioned)
        return handler

    return register


@model_route("GET")
async def metadata(model: str, plane: DataplaneDep) -> dict:
    cfg = plane.model(model)
    stack = plane.watcher.current(cfg.name) if plane.ready(cfg.name) else None
    datatypes = cfg.input.datatypes
    input_datatype = "FP32" if "FP32" in datatypes else datatypes[0]
    shape = [-1, *cfg.input.shape]
    return {
        "name": cfg.name,
        "versions": [str(stack.revision)] if stack else [],
        "platform": "eraser-gateway",
        "inputs": [{"name": cfg.upstream.input_name, "datatype": input_datatype, "shape": shape}],
        "outputs": [
            {
                "name": cfg.output_name,
                "datatype": cfg.upstream.output_datatype or "FP32",
                "shape": [-1, cfg.output_width],
            }
        ],
        "parameters": {
            "classes": cfg.classes,
            "output_kind": cfg.upstream.output_kind.value,
            "input_datatypes": cfg.input.datatypes,
        },
    }


@model_route("GET", "/ready")
async def model_ready(model: str, plane: DataplaneDep, response: Response) -> dict:
    is_ready = plane.ready(plane.model(model).name)
    response.status_code = 200 if is_ready else 503
    return {"name": model, "ready": is_ready}


@model_route(
    "POST",
    "/infer",
    response_model=V2InferResponse,
    openapi_extra=documented_body(V2InferRequest),
)
async def infer(model: str, request: Request, plane: DataplaneDep) -> Response:
    """JSON, or the binary tensor data extension: a JSON header of
    ``Inference-Header-Content-Length`` bytes followed by the inputs' binary data."""
    header_length = request.headers.get(oip.HEADER_LENGTH)
    document, binary = oip.split_body(await request.body(), header_length)
    body = parse_json(document, V2InferRequest)
    cfg = plane.model(model)
    arrays = oip.decode_inputs(body.inputs, binary, header_length is not None)
    x = input_tensor(body, arrays, cfg, plane.settings.max_batch)
    parameters = body.parameters or NO_PARAMETERS
    wanted = requested_outputs(body, cfg, parameters)
    monitor = None if parameters.monitor is None else monitor_rows(parameters.monitor)
    served = await plane.predict(cfg, x, "v2", monitor)
    doc = answer_document(body, served.prediction)
    if monitor is not None:
        doc["parameters"]["eraser_request_id"] = served.request_id
    content, json_length = oip.encode_answer(doc, outputs(served.prediction, wanted))
    headers = {REVISION_HEADER: str(served.prediction.stack.revision)}
    if json_length is None:
        return Response(content, media_type="application/json", headers=headers)
    headers[oip.HEADER_LENGTH] = str(json_length)
    return Response(content, media_type="application/octet-stream", headers=headers)


def monitor_rows(value: object) -> list[dict[str, str]]:
    """``parameters.monitor``: one object of attribute → group per instance (as in /predict)."""
    try:
        return MONITOR_ROWS.validate_python(value)
    except ValidationError as exc:
        raise InvalidMonitoring(
            "parameters.monitor must be a list of {attribute: group} objects, one per instance: "
            f"{exc.errors(include_url=False)[0]['msg']}"
        ) from None


def input_tensor(
    body: V2InferRequest, arrays: list[np.ndarray], cfg: ModelConfig, max_batch: int
) -> np.ndarray:
    """The model's input tensor as float32, checked against the model's input spec: the one
    named like the upstream's input, or the only one. Other inputs are decoded (so that a
    malformed one is refused) and not used."""
    chosen = [i for i, t in enumerate(body.inputs) if t.name == cfg.upstream.input_name]
    if not chosen and len(body.inputs) == 1:
        chosen = [0]
    if len(chosen) != 1:
        raise InvalidInstances(f"expected one input tensor named '{cfg.upstream.input_name}'")
    t, values = body.inputs[chosen[0]], arrays[chosen[0]]
    if t.datatype not in cfg.input.datatypes:
        raise InvalidTensor(
            f"input {t.name!r} is {t.datatype}; this model takes {cfg.input.datatypes}"
        )
    if t.shape[1:] != cfg.input.shape or not t.shape or t.shape[0] < 1:
        raise InvalidInstances(f"input shape {t.shape}, model expects [N, *{cfg.input.shape}]")
    check_batch_size(t.shape[0], max_batch)
    if values.dtype == np.float32 and values.flags.writeable and values.flags.aligned:
        x = values  # FP32 from JSON, the usual case: its own array; no copy, nothing to silence
    else:
        with np.errstate(over="ignore"):  # beyond float32's range: infinite, refused below
            x = values.astype(np.float32)
    check_finite(x)
    return x


@dataclass(frozen=True, slots=True)
class Wanted:
    """An output the request asked for: the fair one or ``raw_<output>``, JSON or binary."""

    name: str
    raw: bool
    binary: bool


def requested_outputs(
    body: V2InferRequest, cfg: ModelConfig, parameters: V2RequestParameters
) -> list[Wanted]:
    """The request's ``outputs`` in its order (each binary if its ``parameters.binary_data``, or
    else the request's ``binary_data_output``, says so); without a list, the model's output and,
    with ``return_raw``, ``raw_<output>``. Checked before the upstream is called."""
    raw_name = f"raw_{cfg.output_name}"
    known = {cfg.output_name: False, raw_name: True}
    default_binary = parameters.binary_data_output
    if body.outputs is None:
        names = [cfg.output_name, raw_name] if parameters.return_raw else [cfg.output_name]
        return [Wanted(n, known[n], default_binary) for n in names]
    wanted = []
    for out in body.outputs:
        if out.name not in known:
            raise InvalidTensor(f"unknown output {out.name!r}; this model has {list(known)}")
        binary = (out.parameters or {}).get("binary_data", default_binary)
        if type(binary) is not bool:
            raise InvalidTensor(f"output {out.name!r}: parameters.binary_data must be a boolean")
        wanted.append(Wanted(out.name, known[out.name], binary))
    if parameters.return_raw and all(w.name != raw_name for w in wanted):
        wanted.append(Wanted(raw_name, True, default_binary))
    return wanted


def answer_datatype(result: Prediction) -> str:
    """The model's declared ``upstream.output_datatype`` (what its metadata reports); unset:
    the upstream's own datatype when it is a float type, FP32 otherwise (an upstream that did
    not say, or scored in integers: debiased values are not integers)."""
    if (declared := result.model.upstream.output_datatype) is not None:
        return declared
    datatype = result.output_datatype
    return datatype if datatype in oip.FLOATS else "FP32"


def outputs(result: Prediction, wanted: list[Wanted]) -> list[oip.Output]:
    """The wanted tensors in ``answer_datatype``."""
    kind = result.model.upstream.output_kind
    datatype = answer_datatype(result)
    values = {False: result.fair_log_probs, True: result.raw_log_probs}
    return [
        oip.Output(w.name, from_log_probs(values[w.raw], kind), datatype, w.binary) for w in wanted
    ]


def answer_document(body: V2InferRequest, result: Prediction) -> dict:
    """The answer without its ``outputs`` (``oip.encode_answer`` adds them)."""
    return {
        "model_name": result.model.name,
        "model_version": str(result.stack.revision),
        "id": body.id,
        "parameters": {
            "eraser_revision": result.stack.revision,
            "debiased": result.debiased,
            "patches": result.stack.describe(),
        },
    }
