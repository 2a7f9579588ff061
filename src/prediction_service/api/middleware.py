"""The outermost layer, as plain ASGI (cheaper than BaseHTTPMiddleware): every HTTP request
gets a checked or new request id, security headers on its response, and its metrics.

``X-Request-ID``: a client's id (1 to 128 printable ASCII characters) is kept, anything else
is refused with 422 before any work is done, and a request without one gets a new id; either
way it is echoed on the response, stored with the prediction log rows, and used to keep a
client on one side of an A/B split.

With tracing on (``tracing.py``), every request is a server span continuing the caller's
``traceparent``, answered with the ``traceparent`` of that span; its latency observation
carries the trace id as an exemplar when the span is sampled.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prediction_service import logs, tracing
from prediction_service.errors import InvalidInputError
from prediction_service.metrics import Metrics
from prediction_service.protocols.base import JSON_CONTENT, Protocol, request_id_problem
from prediction_service.serving.predictions import Ids
from prediction_service.shortcuts import observe_one

# Probes and scrapes are not traffic.
UNCOUNTED = frozenset({"/health", "/ready", "/metrics", "/metrics/prometheus"})
_SECURITY = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# The bundled Swagger UI and ReDoc pages start from an inline script.
_DOCS_CSP = (
    b"content-security-policy",
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'",
)
_DOCS = ("/docs", "/redoc", "/static/docs")


class HTTPMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, shape: Callable[[str], Protocol]) -> None:
        self.app = app
        self.metrics = metrics
        self.shape = shape  # the protocol whose error shape answers a path
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._ids = Ids()  # new request ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        problem = None if given is None else request_id_problem(given)
        request_id = self._ids.next() if given is None or problem else given.decode()
        scope["request_id"] = request_id
        path = scope["path"]
        extra = [
            (b"x-request-id", request_id.encode()),
            *_SECURITY,
            _DOCS_CSP if path.startswith(_DOCS) else _API_CSP,
        ]
        status = 500
        trace = None
        if tracing.enabled and path not in UNCOUNTED:  # probes and scrapes are not traffic
            trace = tracing.start(
                scope["method"], scope["headers"],
                {"http.request.method": scope["method"], "url.path": path},
            )  # fmt: skip
            extra.append((b"traceparent", trace.traceparent().encode()))
        if logs.json_lines:
            logs.request_id.set(request_id)

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        in_flight = self.metrics.http_in_flight
        in_flight.inc()
        try:
            if problem:
                await _refuse(self.shape(path), problem, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            in_flight.dec()
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            if trace is not None:
                if trace.sampled:
                    trace.span.update_name(f"{scope['method']} {label}")
                    trace.set(**{"http.route": label, "http.response.status_code": status})
                tracing.finish(trace, error=None if status < 500 else f"HTTP {status}")
            if label not in UNCOUNTED:
                key = (label, scope["method"], str(status))
                children = self._children.get(key)
                if children is None:  # labels() is slow; route x method x status is small
                    children = (
                        self.metrics.http_requests.labels(*key),
                        self.metrics.http_latency.labels(*key[:2]),
                    )
                    self._children[key] = children
                children[0].inc()
                if trace is not None and trace.sampled:
                    children[1].observe(time.perf_counter() - started, {"trace_id": trace.trace_id})
                else:
                    observe_one(children[1], time.perf_counter() - started)


async def _refuse(protocol: Protocol, problem: str, send: Send) -> None:
    problem = problem.replace("request id", "X-Request-ID")
    error = InvalidInputError(f"invalid input: {problem}")
    error.errors = [{"field": "X-Request-ID", "message": problem, "type": "header"}]
    status, body = protocol.error(error)
    await send({"type": "http.response.start", "status": status, "headers": [JSON_CONTENT]})
    await send({"type": "http.response.body", "body": orjson.dumps(body)})
