"""Open Inference Protocol (V2) health and metadata; inference is a lane (``api/lanes.py``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from prediction_service.api.deps import ServicesDep, StoreDep
from prediction_service.api.responses import JSONResponse
from prediction_service.api.schemas import (
    V2Error,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
    errors,
)
from prediction_service.protocols import v2

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"description": "not ready", "model": V2Ready}}
MODEL_ERRORS = errors(404, 503, model=V2Error)
MODEL_NOT_READY: dict[int | str, dict[str, Any]] = {
    **errors(404, model=V2Error),
    503: {"description": "the model is not loaded", "model": V2ModelReady},
}


@router.get("", summary="Server metadata")
async def server_metadata() -> V2ServerMetadata:
    return V2ServerMetadata.model_validate(v2.server_metadata())


@router.get("/health/live", summary="Server liveness")
async def live() -> V2Live:
    return V2Live(live=True)


@router.get(
    "/health/ready", summary="Server readiness", response_model=V2Ready, responses=NOT_READY
)
async def ready(services: ServicesDep) -> Response:
    is_ready = services.store.not_ready() is None
    return JSONResponse({"ready": is_ready}, 200 if is_ready else 503)


def _ready(store: StoreDep, model: str, version: str | None) -> Response:
    is_ready = v2.model_ready(store, model, version)
    return JSONResponse({"name": model, "ready": is_ready}, 200 if is_ready else 503)


@router.get(
    "/models/{model}/ready",
    summary="Model readiness",
    response_model=V2ModelReady,
    responses=MODEL_NOT_READY,
)
async def model_ready(model: str, store: StoreDep) -> Response:
    return _ready(store, model, None)


@router.get(
    "/models/{model}/versions/{version}/ready",
    summary="Readiness of one served version",
    response_model=V2ModelReady,
    responses=MODEL_NOT_READY,
)
async def version_ready(model: str, version: str, store: StoreDep) -> Response:
    return _ready(store, model, version)


@router.get("/models/{model}", summary="Model metadata", responses=MODEL_ERRORS)
async def model_metadata(model: str, store: StoreDep) -> V2ModelMetadata:
    return V2ModelMetadata.model_validate(v2.model_metadata(store, model))


@router.get(
    "/models/{model}/versions/{version}",
    summary="Metadata of one served version",
    responses=MODEL_ERRORS,
)
async def version_metadata(model: str, version: str, store: StoreDep) -> V2ModelMetadata:
    return V2ModelMetadata.model_validate(v2.model_metadata(store, model, version))
