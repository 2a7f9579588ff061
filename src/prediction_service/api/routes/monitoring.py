"""Ground truth in, live quality and drift out."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from prediction_service.api.auth import Scope
from prediction_service.api.deps import MonitorDep
from prediction_service.api.schemas import DriftReport, FeedbackOut

router = APIRouter(tags=["monitoring"])


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prediction_id: str = Field(min_length=1, max_length=64)
    actual: StrictFloat | StrictInt | StrictStr = Field(
        description="the true value: a number for regressors, a class name for classifiers",
        examples=["setosa"],
    )


@router.post(
    "/feedback",
    summary="Record the true value of a logged prediction",
    dependencies=[Scope("feedback")],
)
async def feedback(body: FeedbackIn, monitor: MonitorDep) -> FeedbackOut:
    result = await run_in_threadpool(monitor.record_feedback, body.prediction_id, body.actual)
    return FeedbackOut.model_validate(result)


@router.get(
    "/drift/{model}",
    summary="Per-feature drift of recent traffic vs the training data",
    dependencies=[Scope("read")],
)
async def drift(model: str, monitor: MonitorDep) -> DriftReport:
    return DriftReport.model_validate(await run_in_threadpool(monitor.drift, model))
