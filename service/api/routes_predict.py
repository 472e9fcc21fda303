"""``POST /predict``: the native prediction route."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from service.api.auth import require_predict
from service.api.bodies import documented_body, parse_body
from service.api.deps import DataplaneDep
from service.api.responses import json_response
from service.api.schemas import PredictRequest, PredictResponse
from service.dataplane import Prediction
from service.eraser_math import softmax_from_log
from service.instances import instances_to_tensor

router = APIRouter(tags=["predict"], dependencies=[Depends(require_predict)])


@router.post(
    "/predict", response_model=PredictResponse, openapi_extra=documented_body(PredictRequest)
)
async def predict(request: Request, plane: DataplaneDep) -> Response:
    """Debiased probabilities for a batch; says which stack revision produced them."""
    body = await parse_body(request, PredictRequest)
    model = plane.model(body.model)
    x = instances_to_tensor(body.instances, model.input, plane.settings.max_batch)
    served = await plane.predict(model, x, "predict", body.monitor)
    content = render(served.prediction, body.return_raw)
    if body.monitor is not None:
        content["request_id"] = served.request_id
    return json_response(content, served.prediction.stack.revision)


def render(result: Prediction, return_raw: bool) -> dict:
    classes = result.model.classes
    fair = softmax_from_log(result.fair_log_probs)
    raw = softmax_from_log(result.raw_log_probs) if return_raw else None
    labels = np.argmax(result.fair_log_probs, axis=1).tolist()
    predictions = []
    for i, (label, row) in enumerate(zip(labels, fair.tolist(), strict=True)):
        item: dict = {
            "label": classes[label],
            "probabilities": dict(zip(classes, row, strict=True)),
        }
        if raw is not None:
            item["raw_probabilities"] = dict(zip(classes, raw[i].tolist(), strict=True))
        predictions.append(item)
    return {
        "model": result.model.name,
        "revision": result.stack.revision,
        "patches": result.stack.describe(),
        "debiased": result.debiased,
        "predictions": predictions,
    }
