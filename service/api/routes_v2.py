"""Drop-in Open Inference Protocol v2: existing clients change only the URL.

The input tensor goes through the same data plane as ``/predict``; the configured output tensor
comes back debiased in the upstream's own output kind (logits stay logits, probabilities stay
probabilities), with the stack revision in ``parameters`` and the ``X-Eraser-Revision`` header.
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import TypeAdapter, ValidationError

from service.api.auth import require_predict
from service.api.bodies import documented_body, parse_body
from service.api.deps import DataplaneDep
from service.api.responses import json_response
from service.api.schemas import V2InferRequest, V2InferResponse, V2RequestParameters
from service.dataplane import Prediction
from service.eraser_math import from_log_probs
from service.errors import InvalidInstances, InvalidMonitoring
from service.instances import as_float32, check_batch_size, check_finite
from service.settings import ModelConfig

health = APIRouter(tags=["v2 health"])
router = APIRouter(tags=["v2"], dependencies=[Depends(require_predict)])

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


@router.get("/v2/models/{model}")
async def metadata(model: str, plane: DataplaneDep) -> dict:
    cfg = plane.model(model)
    stack = plane.watcher.current(cfg.name) if plane.ready(cfg.name) else None
    return {
        "name": cfg.name,
        "versions": [str(stack.revision)] if stack else [],
        "platform": "eraser-gateway",
        "inputs": [
            {"name": cfg.upstream.input_name, "datatype": "FP32", "shape": [-1, *cfg.input.shape]}
        ],
        "outputs": [{"name": cfg.output_name, "datatype": "FP32", "shape": [-1, cfg.output_width]}],
        "parameters": {"classes": cfg.classes, "output_kind": cfg.upstream.output_kind.value},
    }


@router.get("/v2/models/{model}/ready")
async def model_ready(model: str, plane: DataplaneDep, response: Response) -> dict:
    is_ready = plane.ready(plane.model(model).name)
    response.status_code = 200 if is_ready else 503
    return {"name": model, "ready": is_ready}


@router.post(
    "/v2/models/{model}/infer",
    response_model=V2InferResponse,
    openapi_extra=documented_body(V2InferRequest),
)
async def infer(model: str, request: Request, plane: DataplaneDep) -> Response:
    body = await parse_body(request, V2InferRequest)
    cfg = plane.model(model)
    x = input_tensor(body, cfg, plane.settings.max_batch)
    parameters = body.parameters or NO_PARAMETERS
    monitor = None if parameters.monitor is None else monitor_rows(parameters.monitor)
    served = await plane.predict(cfg, x, "v2", monitor)
    content = render(body, served.prediction, parameters.return_raw)
    if monitor is not None:
        content["parameters"]["eraser_request_id"] = served.request_id
    return json_response(content, served.prediction.stack.revision)


def monitor_rows(value: object) -> list[dict[str, str]]:
    """``parameters.monitor``: one object of attribute → group per instance (as in /predict)."""
    try:
        return MONITOR_ROWS.validate_python(value)
    except ValidationError as exc:
        raise InvalidMonitoring(
            "parameters.monitor must be a list of {attribute: group} objects, one per instance: "
            f"{exc.errors(include_url=False)[0]['msg']}"
        ) from None


def input_tensor(body: V2InferRequest, cfg: ModelConfig, max_batch: int) -> np.ndarray:
    """The one input tensor, reshaped and checked against the model's input spec."""
    tensors = [t for t in body.inputs if t.name == cfg.upstream.input_name] or body.inputs
    if len(tensors) != 1:
        raise InvalidInstances(f"expected one input tensor named '{cfg.upstream.input_name}'")
    t = tensors[0]
    if t.shape[1:] != cfg.input.shape or not t.shape or t.shape[0] < 1:
        raise InvalidInstances(f"input shape {t.shape}, model expects [N, *{cfg.input.shape}]")
    check_batch_size(t.shape[0], max_batch)
    values = as_float32(t.data, "input data is not numeric")
    if values.size != int(np.prod(t.shape)):
        raise InvalidInstances(f"input data ({values.size} values) does not fill shape {t.shape}")
    x = values.reshape(t.shape)
    check_finite(x)
    return x


def render(body: V2InferRequest, result: Prediction, return_raw: bool) -> dict:
    cfg = result.model
    kind = cfg.upstream.output_kind
    outputs = [_tensor(cfg.output_name, from_log_probs(result.fair_log_probs, kind))]
    if return_raw:
        raw = from_log_probs(result.raw_log_probs, kind)
        outputs.append(_tensor(f"raw_{cfg.output_name}", raw))
    return {
        "model_name": cfg.name,
        "model_version": str(result.stack.revision),
        "id": body.id,
        "outputs": outputs,
        "parameters": {
            "eraser_revision": result.stack.revision,
            "debiased": result.debiased,
            "patches": result.stack.describe(),
        },
    }


def _tensor(name: str, values: np.ndarray) -> dict:
    return {
        "name": name,
        "shape": list(values.shape),
        "datatype": "FP32",
        "data": values.reshape(-1).tolist(),
    }
