"""Service info, liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from prediction_service import __version__
from prediction_service.api.deps import MetricsDep, StoreDep
from prediction_service.api.responses import JSONResponse
from prediction_service.storage.db import reachable

router = APIRouter(tags=["service"])


@router.get("/", summary="Service info and links")
async def root(store: StoreDep) -> dict[str, Any]:
    return {
        "name": "prediction-service",
        "version": __version__,
        "models": sorted(store.specs),
        "links": {
            "docs": "/docs",
            "health": "/health",
            "ready": "/ready",
            "models": "/models",
            "history": "/predictions/history",
            "metrics": "/metrics",
        },
    }


def _models_status(store: Any) -> dict[str, Any]:
    out = {}
    for name in store.specs:
        model = store.loaded(name)
        out[name] = {
            "loaded": model is not None,
            "version": model.version if model else None,
            "registered_name": store.specs[name].registered_name,
            "error": store.error(name),
        }
    return out


@router.get("/health", summary="Liveness, with detail on models, database and registry")
async def health(request: Request, store: StoreDep) -> dict[str, Any]:
    state = request.app.state
    db_ok = await run_in_threadpool(reachable, state.engine)
    registry_ok = await run_in_threadpool(store.registry.reachable)
    models = _models_status(store)
    healthy = db_ok and registry_ok and all(m["loaded"] for m in models.values())
    return {
        "status": "ok" if healthy else "degraded",
        "version": __version__,
        "uptime_s": round(time.monotonic() - state.started_at, 3),
        "worker_pid": os.getpid(),
        "memory_rss_bytes": psutil.Process(os.getpid()).memory_info().rss,
        "models": models,
        "database": {"reachable": db_ok},
        "registry": {"reachable": registry_ok},
    }


@router.get("/ready", summary="200 only when every model is loaded")
async def ready(store: StoreDep) -> Response:
    missing = {n: store.error(n) or "not loaded" for n in store.specs if store.loaded(n) is None}
    if missing:
        detail = "; ".join(f"{n}: {why}" for n, why in missing.items())
        return JSONResponse({"ready": False, "detail": f"models not loaded: {detail}"}, 503)
    return JSONResponse({"ready": True})


@router.get("/metrics", summary="Prometheus metrics")
@router.get("/metrics/prometheus", include_in_schema=False)
async def metrics(request: Request, metrics: MetricsDep) -> Response:
    metrics.log_queue_depth.set(request.app.state.prediction_log.queue_depth)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
