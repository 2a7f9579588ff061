"""MLflow's scoring protocol: ``/ping`` and ``/version``; ``/invocations`` is a lane."""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter
from starlette.responses import Response

from prediction_service.api.deps import ServicesDep

router = APIRouter(tags=["mlflow scoring protocol"])


@router.get(
    "/ping",
    summary="200 when every model is loaded, as `mlflow models serve` answers",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}, 503: {"description": "not ready"}},
)
async def ping(services: ServicesDep) -> Response:
    status = 503 if services.store.not_ready() else 200
    return Response("\n", status_code=status, media_type="application/json")


@router.get(
    "/version",
    summary="The MLflow version whose scoring protocol this speaks",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
async def version() -> Response:
    return Response(metadata.version("mlflow"), media_type="application/json")
