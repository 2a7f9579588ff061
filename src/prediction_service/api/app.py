"""``create_app(settings, core)``: the HTTP face of the core; nothing happens at import.

The core (``core.py``) is built outside the web layer and started in the lifespan, with the
gRPC server when ``PREDICT_GRPC_PORT`` is set. The protocols' endpoints (``protocols/``) are
answered in front of FastAPI (``api/endpoints.py``); FastAPI serves the rest and the docs.

Our own ASGI layers sit in front of FastAPI's whole stack, not inside it (``ServiceApp``): the
HTTP middleware (request ids, security headers, HTTP metrics), CORS when configured, then the
endpoint router. A prediction so skips FastAPI's and Starlette's entry and their three outer
middleware (server errors, telemetry, body limit), which answer nothing an endpoint does not
answer itself; every other request goes through them as before.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from prediction_service import __version__, protocols
from prediction_service.api import docs, errors, openapi
from prediction_service.api.auth import route_scope
from prediction_service.api.endpoints import BodyBudget, EndpointRouter
from prediction_service.api.middleware import HTTPMiddleware
from prediction_service.api.responses import JSONResponse
from prediction_service.api.routes import history, meta, models, monitoring, retrain
from prediction_service.core import Core, build_core
from prediction_service.protocols.base import Protocol
from prediction_service.settings import Settings

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_S = 0.0005


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    core: Core = app.state.core
    await run_in_threadpool(core.start)
    grpc_server = None
    if core.settings.grpc_port is not None:
        from prediction_service.api.grpc_server import start_grpc

        grpc_server = await start_grpc(core, protocols.grpc())
    # Start-up leaves ~1M long-lived objects (mlflow, pandas, the models); a full collection
    # walks all of them and stalled requests by tens of milliseconds. Freezing moves them
    # out of the collector's way.
    gc.collect()
    gc.freeze()
    # Background threads (the log writer, registry polls, drift checks) hold the GIL for
    # up to the switch interval before the event loop gets it back: 5 ms by default, which
    # showed as p99 latency. 0.5 ms took iris p99 at c=8 from 5.1-7.3 ms to ~4.0 ms with
    # no loss of throughput (wrk, same machine, alternating runs).
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        if grpc_server is not None:
            await grpc_server.stop(core.settings.grpc_grace_s)
        await run_in_threadpool(core.close)
        sys.setswitchinterval(switch_interval)


class ServiceApp(FastAPI):
    """FastAPI behind ``front``: the ASGI layers that see every request first (see above)."""

    front: ASGIApp  # set by create_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.front(scope, receive, send)

    async def fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own entry: its middleware stack, then the routes."""
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    core: Core | None = None,
    served: Sequence[Protocol] = protocols.HTTP,
) -> ServiceApp:
    """The app over ``core`` (built from ``settings`` when not given), speaking the
    ``served`` protocols over HTTP (by default every registered one)."""
    if core is None:
        core = build_core(settings or Settings())
    app = ServiceApp(
        title="Prediction service",
        version=__version__,
        description="Serves the champion of every model spec over its own REST protocol, the "
        "Open Inference Protocol (REST and gRPC) and MLflow's scoring protocol; logs every "
        "prediction and exposes Prometheus metrics.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        default_response_class=JSONResponse,
        # A request for /feedback/ is not redirected to /feedback: a redirect is built from
        # the Host header, which the client chooses.
        redirect_slashes=False,
        # Prometheus metrics are our own; FastAPI's OpenTelemetry hook costs ~10 us a request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.core = core
    errors.install(app)
    docs.install(app)
    limits = core.settings
    openapi.install(app, served, core.predictions.codecs, limits.max_batch_size, core.access)
    for routes in (meta.router, models.router, history.router):
        app.include_router(routes)
    app.include_router(retrain.build_router(core.specs))
    app.include_router(monitoring.build_router(core.specs))
    router = EndpointRouter(
        app.fastapi,
        served,
        core.predictions,
        core.access,
        core.metrics,
        limits.max_body_bytes,
        BodyBudget(limits.memory_budget_bytes // 8),
        route_scope(app),
    )
    front: ASGIApp = router
    origins = [o.strip() for o in core.settings.cors_origins.split(",") if o.strip()]
    if origins:  # off unless configured; outside the router, so predictions carry it too
        front = CORSMiddleware(
            front,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.front = HTTPMiddleware(front, metrics=core.metrics, shape=router.protocol_for)
    return app
