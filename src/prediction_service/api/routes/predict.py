"""Prediction routes, generated per spec so OpenAPI shows each model's own fields.

No ``from __future__ import annotations`` here: FastAPI must see the generated record
classes as real objects in the endpoint signatures.
"""

from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from prediction_service.api.deps import ServiceDep, StoreDep
from prediction_service.api.responses import JSONResponse
from prediction_service.api.schemas import (
    BatchOut,
    ErrorOut,
    PredictionOut,
    batch_model,
    example_row,
    record_model,
)
from prediction_service.specs import ModelSpec

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (404, 413, 422, 503)
}


async def _check_batch_size(request: Request, service: ServiceDep) -> None:
    """Answer 413 before validating thousands of records one by one."""
    body = await request.json()
    records = body.get("records") if isinstance(body, dict) else None
    if isinstance(records, list):
        service.check_batch_size(len(records))


def _add_model_routes(
    router: APIRouter, spec: ModelSpec, home: Path, max_batch: int
) -> type[BaseModel]:
    name = spec.name
    record_cls = record_model(spec, example_row(spec, home))
    batch_cls = batch_model(spec, record_cls, max_batch)

    async def predict_one(record: record_cls, request: Request) -> Any:  # type: ignore[valid-type]
        # One row costs tens of microseconds: inline beats a thread-pool hop. The service is
        # read from app.state directly: a dependency costs more than the prediction.
        result = request.app.state.service.predict_one(
            name, record.__dict__, request.headers.get("x-request-id")  # type: ignore[attr-defined]
        )
        return JSONResponse(result)

    async def predict_batch(batch: batch_cls, request: Request) -> Any:  # type: ignore[valid-type]
        features = spec.feature_names
        X = np.array(
            [[r.__dict__[f] for f in features] for r in batch.records],  # type: ignore[attr-defined]
            dtype=np.float64,
        )
        result = await run_in_threadpool(
            request.app.state.service.predict_batch, name, X, request.headers.get("x-request-id")
        )
        return JSONResponse(result)

    what = "class and class probabilities" if spec.task == "classification" else "value"
    router.add_api_route(
        f"/{name}",
        predict_one,
        methods=["POST"],
        summary=f"Predict one {name} record",
        description=f"{spec.description}\n\nReturns the predicted {what} of one record.",
        response_model=PredictionOut,
        responses=ERRORS,
        operation_id=f"predict_{name}",
    )
    router.add_api_route(
        f"/{name}/batch",
        predict_batch,
        methods=["POST"],
        summary=f"Predict a batch of {name} records",
        description=f"Up to {max_batch} records in one call; results come back in order.",
        response_model=BatchOut,
        responses=ERRORS,
        dependencies=[Depends(_check_batch_size)],
        operation_id=f"predict_{name}_batch",
    )
    return record_cls


def build_router(
    specs: dict[str, ModelSpec], home: Path, max_batch: int
) -> tuple[APIRouter, dict[str, type[BaseModel]]]:
    """The prediction routes, and each model's record class (for the fast path)."""
    router = APIRouter(prefix="/predict", tags=["predict"])
    records = {
        name: _add_model_routes(router, spec, home, max_batch) for name, spec in specs.items()
    }

    @router.post("/{model}", include_in_schema=False)
    @router.post("/{model}/batch", include_in_schema=False)
    async def unknown_model(model: str, store: StoreDep) -> None:
        store.spec(model)  # raises 404 naming the known models

    return router, records


__all__ = ["build_router"]
