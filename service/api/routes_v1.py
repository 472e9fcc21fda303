"""KServe v1 drop-in for clients of the older protocol: ``POST /v1/models/{m}:predict``
(``{"instances": [...]}`` → ``{"predictions": [...]}``) and ``GET /v1/models/{m}``.

The same data plane, keys and metrics (``route="v1"``) as the other prediction routes; each
prediction is the model's output row debiased in the upstream's own kind, as on the v2 route.
Errors are ``{"error": "<message>"}``, as KServe's servers answer them (``service.api.errors``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.api.auth import require_predict
from service.api.bodies import documented_body, parse_body
from service.api.deps import DataplaneDep
from service.api.responses import json_response
from service.api.schemas import V1PredictRequest, V1PredictResponse
from service.eraser_math import from_log_probs
from service.instances import instances_to_tensor

router = APIRouter(tags=["kserve v1"], dependencies=[Depends(require_predict)])


@router.get("/v1/models/{model}")
async def model_status(model: str, plane: DataplaneDep) -> dict:
    """``{"name", "ready"}``: ready once the model's active stack is loaded."""
    return {"name": model, "ready": plane.ready(plane.model(model).name)}


@router.post(
    "/v1/models/{model}:predict",
    response_model=V1PredictResponse,
    openapi_extra=documented_body(V1PredictRequest),
)
async def predict(model: str, request: Request, plane: DataplaneDep) -> Response:
    body = await parse_body(request, V1PredictRequest)
    cfg = plane.model(model)
    x = instances_to_tensor(body.instances, cfg.input, plane.settings.max_batch)
    served = await plane.predict(cfg, x, "v1")
    result = served.prediction
    rows = from_log_probs(result.fair_log_probs, cfg.upstream.output_kind)
    return json_response({"predictions": rows.tolist()}, result.stack.revision)
