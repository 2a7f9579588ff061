"""HTTP metrics as a plain ASGI middleware (cheaper than BaseHTTPMiddleware)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_service.metrics import Metrics

# Probes and scrapes are not traffic.
UNCOUNTED = frozenset({"/health", "/ready", "/metrics", "/metrics/prometheus"})


class HTTPMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = self.metrics.http_in_flight
        in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            if path not in UNCOUNTED:
                key = (path, scope["method"], str(status))
                children = self._children.get(key)
                if children is None:  # labels() is slow; route x method x status is small
                    children = (
                        self.metrics.http_requests.labels(*key),
                        self.metrics.http_latency.labels(*key[:2]),
                    )
                    self._children[key] = children
                children[0].inc()
                children[1].observe(time.perf_counter() - started)
