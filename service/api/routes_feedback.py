"""``POST /feedback``: the true label of one monitored instance, for accuracy-based bias metrics
(equalized odds, worst-group accuracy). Any replica can take it: served decisions live in Redis.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from service.api.auth import require_feedback
from service.api.bodies import documented_body, parse_body
from service.api.deps import MonitorDep
from service.api.schemas import FeedbackRequest, FeedbackResponse

router = APIRouter(tags=["monitoring"], dependencies=[Depends(require_feedback)])


@router.post(
    "/feedback", response_model=FeedbackResponse, openapi_extra=documented_body(FeedbackRequest)
)
async def feedback(request: Request, monitor: MonitorDep) -> FeedbackResponse:
    """Count the label once. A malformed id is a 422 (the schema's pattern), a well-formed one
    the store does not hold a 404 (never issued, expired and evicted look alike: ids are random),
    a second label for the same instance a 409."""
    body = await parse_body(request, FeedbackRequest)
    result = await monitor.feedback(body.request_id, body.index, body.label)
    return FeedbackResponse(
        request_id=result.request_id,
        index=result.index,
        model=result.model,
        label=result.label,
        correct={"raw": result.raw_correct, "fair": result.fair_correct},
    )
