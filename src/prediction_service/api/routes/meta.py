"""Service info, liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

import os
import time

import psutil
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_service import __version__
from prediction_service.api.deps import CoreDep
from prediction_service.api.responses import JSONResponse
from prediction_service.api.schemas import Health, ModelStatus, Reachable, Ready, ServiceInfo
from prediction_service.serving.model_store import ModelStore

router = APIRouter(tags=["service"])


@router.get("/", summary="Service info and links")
async def root(core: CoreDep) -> ServiceInfo:
    return ServiceInfo(
        name="prediction-service",
        version=__version__,
        models=sorted(core.specs),
        links={
            "docs": "/docs",
            "health": "/health",
            "ready": "/ready",
            "models": "/models",
            "history": "/predictions/history",
            "metrics": "/metrics",
            "v2": "/v2",
            "invocations": "/invocations",
        },
    )


def models_status(store: ModelStore, detailed: bool) -> dict[str, ModelStatus]:
    out = {}
    for name, spec in store.specs.items():
        model = store.loaded(name)
        out[name] = ModelStatus(
            loaded=model is not None,
            version=model.version if model else None,
            registered_name=spec.registered_name,
            error=store.error(name) if detailed else None,
        )
    return out


@router.get(
    "/health",
    summary="Liveness: ok or degraded (a model not loaded, the database, the registry or the "
    "prediction log failing); the details (errors, the process, the log) need the read scope "
    "when it is closed",
)
async def health(request: Request, core: CoreDep) -> Health:
    detailed = core.access.allows("read", request.headers.get("authorization"))
    db_ok = await run_in_threadpool(core.database_reachable)
    registry_ok = await run_in_threadpool(core.registry.reachable)
    models = models_status(core.store, detailed)
    log = core.prediction_log.status()
    healthy = db_ok and registry_ok and log.writable and all(m.loaded for m in models.values())
    health = Health(
        status="ok" if healthy else "degraded",
        version=__version__,
        models=models,
        database=Reachable(reachable=db_ok),
        registry=Reachable(reachable=registry_ok),
    )
    if not detailed:
        return health
    return health.model_copy(
        update={
            "uptime_s": round(time.monotonic() - core.started_at, 3),
            "worker_pid": os.getpid(),
            "memory_rss_bytes": psutil.Process(os.getpid()).memory_info().rss,
            "prediction_log": log,
        }
    )


@router.get(
    "/ready",
    summary="200 only when every model is loaded",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "a model is not loaded; detail says why"}},
)
async def ready(core: CoreDep) -> Response:
    why = core.store.not_ready()
    log = core.prediction_log
    if why is None and log.required and log.failing_since is not None:
        why = f"the prediction log cannot be written (PREDICT_LOG_REQUIRED): {log.last_error}"
    if why:
        return JSONResponse({"ready": False, "detail": why}, 503)
    return JSONResponse({"ready": True})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {}, OPENMETRICS: {}},
            "description": "text exposition; OpenMetrics, with exemplars, when Accept asks",
        }
    },
)
@router.get("/metrics/prometheus", include_in_schema=False)
async def metrics(core: CoreDep, request: Request) -> Response:
    core.metrics.log_queue_depth.set(core.prediction_log.queue_depth)
    body, content_type = core.metrics.exposition(request.headers.get("accept"))
    return Response(body, media_type=content_type)
