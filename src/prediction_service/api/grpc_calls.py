"""What both gRPC engines share (``api/grpc_h2.py``, ``api/grpc_server.py``): the caller's
key checked before a call's message is read, the status and message that answer an error
(counted as its HTTP twin is), and a call's trace."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import grpc

from prediction_service import tracing
from prediction_service.access import AuthError
from prediction_service.core import Core
from prediction_service.errors import ServiceError
from prediction_service.protocols.base import Call, Endpoint, Protocol

log = logging.getLogger(__name__)

_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# Error details a client is told: enough to fix the call, never the whole of its input.
MAX_MESSAGE = 1000


def admit(core: Core, endpoint: Endpoint, call: Call, peer: Callable[[], str]) -> None:
    """The caller's key checked for ``endpoint``'s scope, before anything is parsed
    (AuthError otherwise); ``peer`` names the client's address, asked only when needed."""
    if sum(name == b"authorization" for name, _ in call.headers) > 1:
        raise AuthError("send one authorization entry, not several", 400)
    if endpoint.scope is not None and not core.access.is_open(endpoint.scope):
        core.access.check(endpoint.scope, call.header(b"authorization"), peer())


def failure(
    core: Core, endpoint: Endpoint, protocol: Protocol, call: Call, exc: Exception
) -> tuple[grpc.StatusCode, str]:
    """The gRPC status and message that answer ``exc``: a domain error's matching status,
    counted like its HTTP twin; anything else INTERNAL, logged, never its stack trace."""
    if isinstance(exc, ServiceError):
        if endpoint.predicts:
            model = call.params.get("model")
            label = model if model in core.specs else "unknown"
            core.metrics.prediction_errors.labels(label, exc.reason, protocol.name).inc()
        return _CODES.get(protocol.status_of(exc), grpc.StatusCode.INTERNAL), _short(exc.message)
    log.error("unexpected error in %s", endpoint.path, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal server error"


def _short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."


def begin_trace(endpoint: Endpoint, headers: Sequence[tuple[bytes, bytes]]) -> tracing.Trace:
    """A call's server span (continuing the caller's ``traceparent``), its handler begun."""
    trace = tracing.start(
        endpoint.path.lstrip("/"), headers, {"rpc.system": "grpc", "rpc.method": endpoint.path}
    )
    trace.handler = time.time_ns()
    return trace


def end_trace(trace: tracing.Trace, code: grpc.StatusCode | None, error: str | None) -> None:
    trace.set(**{"rpc.grpc.status_code": code.value[0] if code else 0})
    tracing.finish(trace, error)
