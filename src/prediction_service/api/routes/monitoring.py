"""Ground truth in, live quality and drift out.

No ``from __future__ import annotations``: the feedback body is generated from the specs,
and FastAPI must see it as a real class in the endpoint's signature.
"""

from typing import Annotated

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, create_model
from starlette.concurrency import run_in_threadpool

from prediction_service.api.auth import Scope
from prediction_service.api.deps import MonitorDep
from prediction_service.api.schemas import errors
from prediction_service.domain import DriftReport, FeedbackResult
from prediction_service.specs import ModelSpec

PREDICTION_ID = r"^[0-9a-f]{32}$"


def feedback_model(specs: dict[str, ModelSpec]) -> type[BaseModel]:
    """``{"prediction_id", "actual"}``: a number for regressors, a class name for
    classifiers. Which one a prediction takes is known only once it is found, so the body
    takes either and the monitor checks it against that prediction's model (naming what
    that model takes)."""
    classes = sorted({c for s in specs.values() for c in s.target.classes or ()})
    regression = any(s.task == "regression" for s in specs.values())
    return create_model(
        "FeedbackIn",
        __config__=ConfigDict(extra="forbid"),
        prediction_id=(str, Field(pattern=PREDICTION_ID, description="from the prediction")),
        actual=(
            StrictFloat | StrictInt | Annotated[str, Field(max_length=256)],
            Field(
                description="the true value: a number for regressors, a class name for "
                "classifiers" + (f" (one of {', '.join(classes)})" if classes else ""),
                examples=[classes[0] if classes and not regression else 1.0],
            ),
        ),
    )


def build_router(specs: dict[str, ModelSpec]) -> APIRouter:
    router = APIRouter(tags=["monitoring"])
    FeedbackIn = feedback_model(specs)

    @router.post(
        "/feedback",
        summary="Record the true value of a logged prediction",
        dependencies=[Scope("feedback")],
        responses=errors(404, 409, 410),
    )
    async def feedback(
        body: Annotated[FeedbackIn, Body()], monitor: MonitorDep  # type: ignore[valid-type]
    ) -> FeedbackResult:
        return await run_in_threadpool(
            monitor.record_feedback, body.prediction_id, body.actual  # type: ignore[attr-defined]
        )

    @router.get(
        "/drift/{model}",
        summary="Per-feature drift of recent traffic vs the training data",
        dependencies=[Scope("read")],
        responses=errors(404, 503),
    )
    async def drift(model: str, monitor: MonitorDep) -> DriftReport:
        return await run_in_threadpool(monitor.drift, model)

    return router
